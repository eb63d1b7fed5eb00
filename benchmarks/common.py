"""Shared pieces of the benchmarks: result rows, interleaved timing, frame samples and the machine.

Every comparison runs the toolkit's way and the plain way in the same process, round after round, on
the same frames, with the order of the variants rotated each round. A machine that gets busier or
quieter during a benchmark then slows both ways alike, so the per-round ratios stay meaningful even
when the absolute rates do not. Each round also records the process's CPU time. Frames per CPU second
show what a way costs whatever share of the cores it got, which on a machine busy with other work can
be far from all of them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Result:
    """One measured number, printed as one JSON line.

    Attributes:
        name: ``<benchmark>/<what>``, e.g. ``input_pipeline/toolkit``.
        value: the measurement in ``unit`` (a median over rounds where there are rounds).
        unit: e.g. ``frames/s``, ``MB``, ``s``, ``trials/min``.
        ratio: the toolkit's value over its comparison's (``settings["ratio_of"]`` names which); None
            where the row has no comparison.
        frames: frames (or feature rows) processed in the timed part, over all rounds.
        seconds: wall-clock seconds of the timed part, over all rounds.
        settings: everything that determines the number: sizes, rounds, batch size, load average.
    """

    name: str
    value: float
    unit: str
    ratio: float | None
    frames: int | None
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        row = asdict(self)
        row["value"] = round(self.value, 4)
        row["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        row["seconds"] = round(self.seconds, 3)
        return json.dumps(row, sort_keys=False)


# --- Interleaved timing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Frames processed, wall-clock seconds and CPU seconds of one variant in one round."""

    frames: int
    seconds: float
    cpu_seconds: float
    """User and system time of the whole process (all threads) during the round."""

    @property
    def rate(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Frames per CPU second: what the variant costs, whatever share of the cores it got."""
        return self.frames / self.cpu_seconds


def interleave(variants: Mapping[str, Callable[[int], int]], rounds: int,
               warm_up: Iterable[str] = ()) -> dict[str, list[Timing]]:
    """Time each variant once per round, rotating their order every round.

    Args:
        variants: name -> function of the round number that does one round's work and returns the
            number of frames it processed.
        rounds: how many times each variant runs.
        warm_up: variants to run once, untimed, before the first round (round number -1), so that
            one-time costs such as TensorFlow's start-up and tracing stay out of the rates.

    Returns:
        Per variant, one ``Timing`` per round in round order.
    """
    for name in warm_up:
        variants[name](-1)
    names = list(variants)
    timings: dict[str, list[Timing]] = {name: [None] * rounds for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            started, cpu_started = time.perf_counter(), time.process_time()
            frames = variants[name](round_number)
            timings[name][round_number] = Timing(frames, time.perf_counter() - started,
                                                 time.process_time() - cpu_started)
    return timings


def median_rate(timings: list[Timing]) -> float:
    """Return the median over rounds of frames per second."""
    return statistics.median(timing.rate for timing in timings)


def round_ratios(numerator: list[Timing], denominator: list[Timing]) -> list[float]:
    """Return, round by round, the ratio of two variants' rates measured in the same round."""
    return [a.rate / b.rate for a, b in zip(numerator, denominator)]


def cpu_settings(timings: list[Timing], compared_with: list[Timing] | None = None) -> dict[str, Any]:
    """Return the rate per CPU second (median over rounds) and, when compared, the median ratio of it.

    The rate counts what the rounds returned (frames, images or epochs), as the Result's unit does.
    """
    settings: dict[str, Any] = {"rate_per_cpu_second": round(statistics.median(t.cpu_rate for t in timings), 2)}
    if compared_with is not None:
        ratios = [a.cpu_rate / b.cpu_rate for a, b in zip(timings, compared_with)]
        settings["cpu_ratio"] = round(statistics.median(ratios), 3)
    return settings


def ratio_settings(ratios: list[float]) -> dict[str, Any]:
    """Return the spread of per-round ratios for a Result's settings: ``ratio_range: [min, max]``."""
    return {"ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def rate_result(name: str, timings: dict[str, list[Timing]], variant: str, compared_with: str | None,
                settings: dict[str, Any], unit: str = "frames/s") -> Result:
    """Summarise one variant's rounds as a Result, with its ratio to ``compared_with`` when given."""
    rounds = timings[variant]
    ratio, extra = None, cpu_settings(rounds)
    if compared_with:
        ratios = round_ratios(rounds, timings[compared_with])
        ratio = statistics.median(ratios)
        extra = {"ratio_of": f"{variant} / {compared_with}", **ratio_settings(ratios),
                 **cpu_settings(rounds, timings[compared_with])}
    return Result(name=name, value=median_rate(rounds), unit=unit, ratio=ratio,
                  frames=sum(t.frames for t in rounds), seconds=sum(t.seconds for t in rounds),
                  settings={**settings, **extra, "rounds": len(rounds), "load_average_1min": load_average()})


# --- Frames --------------------------------------------------------------------------------------


def sample_train_frames(data_dir: Path, n_frames: int, seed: int = 0) -> pd.DataFrame:
    """Return ``n_frames`` training frames (``img, path, classname, ...``), drawn evenly over the classes.

    Every file is read once so that both ways of loading find it in the page cache.
    """
    from kaggle_sf.data.catalog import load_catalog

    train = load_catalog(Path(data_dir)).train
    shuffled = train.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("classname").cumcount()
    frames = shuffled.assign(rank=rank.to_numpy()).sort_values("rank", kind="stable").head(n_frames)
    frames = frames.drop(columns="rank").reset_index(drop=True)
    for path in frames["path"]:
        Path(path).read_bytes()
    return frames


# --- Machine -------------------------------------------------------------------------------------


def load_average() -> float:
    """Return the one-minute load average, rounded to 0.1."""
    return round(os.getloadavg()[0], 1)


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_result() -> Result:
    """Describe the machine: cores (the value), CPU model, memory, load and library versions."""
    import cv2
    import keras
    import PIL
    import scipy
    import simplejpeg
    import tensorflow as tf

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    settings = {"cpu_model": cpu_model(), "machine": platform.machine(), "memory_gb": round(memory_gb, 1),
                "load_average_1min": load_average(), "gpus": len(tf.config.list_physical_devices("GPU")),
                "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "opencv": cv2.__version__, "simplejpeg": simplejpeg.__version__, "pillow": PIL.__version__,
                "scipy": scipy.__version__}
    return Result(name="machine", value=float(os.cpu_count() or 1), unit="cores", ratio=None, frames=None,
                  seconds=0.0, settings=settings)


def in_memory_batches(frames, labels, batch_size: int, seed: int = 1):
    """Return endless shuffled float32 training batches of uint8 ``frames`` held in memory.

    The frames become one tensor once, so each ``fit`` on the dataset pays only for shuffling and
    batching. ``model.fit`` on the NumPy array itself would copy the whole array into a new dataset on
    every call.
    """
    import tensorflow as tf

    from kaggle_sf.data.images import without_autotuning

    dataset = (tf.data.Dataset.from_tensor_slices((frames, labels)).shuffle(len(frames), seed=seed).repeat()
               .batch(batch_size).map(lambda images, batch_labels: (tf.cast(images, tf.float32), batch_labels))
               .prefetch(tf.data.AUTOTUNE))
    # As the toolkit's pipelines do, so that both sides return from ``fit`` without the same delay.
    return without_autotuning(dataset)


WARM_UP_STEPS = 2
"""Training steps of the warm-up call of a ``steps_fitter`` round function, which traces the step."""


def steps_fitter(model, dataset, steps: int, batch_size: int) -> Callable[[int], int]:
    """Return an ``interleave`` round function that trains ``model`` for ``steps`` steps of ``dataset``.

    The warm-up round (a negative round number) takes ``WARM_UP_STEPS`` steps. The function returns the
    number of images trained on.
    """

    def fit(round_number: int) -> int:
        n_steps = WARM_UP_STEPS if round_number < 0 else steps
        # The datasets shuffle themselves; Keras' shuffle applies to arrays only.
        model.fit(dataset, epochs=1, steps_per_epoch=n_steps, shuffle=False, verbose=0)
        return n_steps * batch_size

    return fit
