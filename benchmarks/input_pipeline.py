"""Input pipeline: JPEG files to training batches, the toolkit's tf.data pipeline against the plain way.

Variants, each run once per round on the same frames:

- ``toolkit`` and ``toolkit_augment``: ``kaggle_sf.data.images.image_dataset`` with labels and
  shuffling, without and with ``make_batch_augmenter(AugmentConfig())``, batches of 32;
- ``plain``, ``plain_augment`` and ``plain_nearest``: ``benchmarks.plain.plain_batches``, the
  one-frame-at-a-time loop of Keras 2's ``flow_from_directory``; ``plain_nearest`` resizes with Keras'
  default nearest-neighbour filter instead of an antialiased one;
- ``decode_turbojpeg``, ``decode_opencv`` and ``decode_tensorflow``: the JPEG decoding limit, JPEG
  bytes already in memory decoded at the DCT reduction that ``image_dataset`` chooses for the size, on
  every core (a thread per core for TurboJPEG and OpenCV, a parallel ``tf.data`` map for TensorFlow).
  Nothing is resized or batched. The toolkit decodes with TurboJPEG and falls back to OpenCV;
- ``resize``: ``kaggle_sf.data.images.resize_image`` alone on the same frames, decoded beforehand, a
  thread per core; ``resize_bilinear`` the same with OpenCV's plain bilinear filter, the cheapest resize
  that still interpolates.

The toolkit's share of the decoding limit is its rate over the fastest of the three decoders in the
same round. Its share of decoding and resizing is its rate over the rate of that decoder followed by
the resize, which leaves out only reading files, batching and tf.data's own work. The share that
decoding followed by the bilinear resize could reach, with nothing else, is the limit for any pipeline
that resizes.

The tf.data pipelines are built once per size and iterated anew each round. Tracing their functions,
which a training run pays once per epoch of thousands of frames, thus stays out of the rates, while
starting the iteration and filling the first batch stay in.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import (
    Result,
    Timing,
    cpu_settings,
    interleave,
    load_average,
    rate_result,
    ratio_settings,
    round_ratios,
    sample_train_frames,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def _opencv_decoder(blobs: list[bytes], ratio: int, pool: ThreadPoolExecutor):
    import cv2

    # The flags of the toolkit's fallback decoder. BGR output (plain IMREAD_COLOR) decodes at the same speed.
    from kaggle_sf.data.images import READ_FLAGS

    flags = READ_FLAGS[ratio]
    arrays = [np.frombuffer(blob, dtype=np.uint8) for blob in blobs]

    def decode(round_number: int) -> int:
        # OpenCV releases the GIL while decoding, so the threads decode in parallel. Each frame is
        # dropped as soon as it is counted: keeping a round's frames made every decode write to
        # fresh pages, and at 640x480 the page faults doubled OpenCV's time.
        return sum(frame is not None for frame in pool.map(lambda array: cv2.imdecode(array, flags), arrays))

    return decode


def _turbojpeg_decoder(blobs: list[bytes], ratio: int, frame_shape: tuple[int, int], pool: ThreadPoolExecutor):
    import simplejpeg

    from kaggle_sf.data.images import reduced_size

    height, width = reduced_size(frame_shape, ratio)

    def decode_one(blob: bytes) -> tuple[int, ...]:
        return simplejpeg.decode_jpeg(blob, "RGB", min_height=height, min_width=width, min_factor=ratio).shape

    def decode(round_number: int) -> int:
        # simplejpeg releases the GIL while decoding, so the threads decode in parallel.
        return sum(1 for _ in pool.map(decode_one, blobs))

    return decode


def _resizer(decoded: list[np.ndarray], resize_one: Callable[[np.ndarray], np.ndarray], pool: ThreadPoolExecutor):
    def resize(round_number: int) -> int:
        # OpenCV releases the GIL while resizing, so the threads resize in parallel.
        return sum(1 for _ in pool.map(resize_one, decoded))

    return resize


def _tensorflow_decoder(blobs: list[bytes], ratio: int):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(blobs)).map(
        # Only the shape leaves the pipeline, so the rate is the decoder's, not the copy's.
        lambda blob: tf.shape(tf.io.decode_jpeg(blob, channels=3, ratio=ratio, dct_method="INTEGER_FAST")),
        num_parallel_calls=tf.data.AUTOTUNE).batch(256)

    def decode(round_number: int) -> int:
        return sum(int(shapes.shape[0]) for shapes in dataset)

    return decode


def _toolkit_loader(paths: list[str], labels: list[int], size: tuple[int, int], augment: bool):
    from kaggle_sf.data.augment import AugmentConfig, make_batch_augmenter
    from kaggle_sf.data.images import image_dataset

    augmenter = make_batch_augmenter(AugmentConfig()) if augment else None
    # Built once: each round iterates it anew, in a new shuffled order, without tracing its functions again.
    dataset = image_dataset(paths, size, BATCH_SIZE, labels=labels, shuffle=True, seed=1, augment=augmenter)

    def load(round_number: int) -> int:
        return sum(int(images.shape[0]) for images, _ in dataset)

    return load


def _plain_loader(paths: list[str], labels: list[int], size: tuple[int, int], augment: bool, resampling: str):
    from benchmarks.plain import plain_batches
    from kaggle_sf.data.augment import AugmentConfig

    def load(round_number: int) -> int:
        batches = plain_batches(paths, labels, size, BATCH_SIZE, augment=AugmentConfig() if augment else None,
                                resampling=resampling, seed=round_number + 1)
        return sum(len(frames) for frames, _ in batches)

    return load


def _results_for_size(size: tuple[int, int], timings: dict[str, list[Timing]],
                      settings: dict[str, object]) -> list[Result]:
    prefix = "input_pipeline"
    rows = [
        rate_result(f"{prefix}/toolkit", timings, "toolkit", "plain", settings),
        rate_result(f"{prefix}/toolkit_augment", timings, "toolkit_augment", "plain_augment", settings),
        rate_result(f"{prefix}/plain", timings, "plain", None, settings),
        rate_result(f"{prefix}/plain_augment", timings, "plain_augment", None, settings),
        rate_result(f"{prefix}/plain_nearest", timings, "plain_nearest", None, settings),
        rate_result(f"{prefix}/toolkit_vs_plain_nearest", timings, "toolkit", "plain_nearest", settings),
        rate_result(f"{prefix}/decode_turbojpeg", timings, "decode_turbojpeg", None, settings),
        rate_result(f"{prefix}/decode_opencv", timings, "decode_opencv", None, settings),
        rate_result(f"{prefix}/decode_tensorflow", timings, "decode_tensorflow", None, settings),
        rate_result(f"{prefix}/resize", timings, "resize", None, settings),
        rate_result(f"{prefix}/resize_bilinear", timings, "resize_bilinear", None, settings),
    ]
    # The decoding limit of a round is the fastest decoder of that round, by wall clock and by CPU time.
    decoders = list(zip(timings["decode_turbojpeg"], timings["decode_opencv"], timings["decode_tensorflow"]))
    limit = [max(round_decoders, key=lambda t: t.rate) for round_decoders in decoders]
    cpu_limit = [max(round_decoders, key=lambda t: t.cpu_rate) for round_decoders in decoders]

    def then(decodes: list[Timing], resizes: list[Timing]) -> list[Timing]:
        # Decoding then resizing each frame, with nothing else, could go no faster than this.
        return [Timing(frames=decode.frames, seconds=decode.seconds + decode.frames / resize.rate,
                       cpu_seconds=decode.cpu_seconds + decode.frames / resize.cpu_rate)
                for decode, resize in zip(decodes, resizes)]

    shares = round_ratios(timings["toolkit"], then(limit, timings["resize"]))
    share = statistics.median(shares)
    rows.append(Result(name=f"{prefix}/toolkit_share_of_decode_and_resize", value=share, unit="fraction",
                       ratio=share, frames=sum(t.frames for t in timings["toolkit"]),
                       seconds=sum(t.seconds for t in timings["toolkit"]),
                       settings={**settings, "ratio_of": "toolkit / (decoding limit and resize in sequence)",
                                 **ratio_settings(shares), "rounds": len(limit),
                                 "load_average_1min": load_average()}))
    ceilings = round_ratios(then(limit, timings["resize_bilinear"]), limit)
    ceiling = statistics.median(ceilings)
    rows.append(Result(name=f"{prefix}/bilinear_share_of_decode_limit", value=ceiling, unit="fraction",
                       ratio=ceiling, frames=sum(t.frames for t in limit), seconds=sum(t.seconds for t in limit),
                       settings={**settings, "ratio_of": "(decoding limit and bilinear resize in sequence) / "
                                                          "decoding limit",
                                 **ratio_settings(ceilings), "rounds": len(limit),
                                 "load_average_1min": load_average()}))
    for variant in ("toolkit", "toolkit_augment"):
        shares = round_ratios(timings[variant], limit)
        share = statistics.median(shares)
        rows.append(Result(name=f"{prefix}/{variant}_share_of_decode_limit", value=share, unit="fraction",
                           ratio=share, frames=sum(t.frames for t in timings[variant]),
                           seconds=sum(t.seconds for t in timings[variant]),
                           settings={**settings,
                                     "ratio_of": f"{variant} / max(decode_turbojpeg, decode_opencv, decode_tensorflow)",
                                     **ratio_settings(shares), **cpu_settings(timings[variant], cpu_limit),
                                     "rounds": len(limit), "load_average_1min": load_average()}))
    return rows


def run_input_pipeline(data_dir: Path, sizes: list[tuple[int, int]], n_frames: int, rounds: int) -> list[Result]:
    """Measure frames per second of each variant at each size; see the module docstring.

    Args:
        data_dir: competition files with full-resolution frames.
        sizes: (height, width) targets, e.g. 224x224 and 299x299.
        n_frames: frames per round, drawn evenly over the classes.
        rounds: rounds per size.
    """
    import cv2
    from PIL import Image

    from kaggle_sf.data.images import dct_reduction, decode_image, resize_image

    frames = sample_train_frames(data_dir, n_frames)
    paths = frames["path"].tolist()
    labels = frames["classname"].str[1:].astype(int).tolist()
    blobs = [Path(path).read_bytes() for path in paths]
    with Image.open(paths[0]) as first:
        frame_shape = (first.height, first.width)
    threads = os.cpu_count() or 1

    results = []
    for size in sizes:
        ratio = dct_reduction(frame_shape, size)
        pool = ThreadPoolExecutor(threads)
        decoded = [decode_image(blob, size) for blob in blobs]
        variants = {
            "toolkit": _toolkit_loader(paths, labels, size, augment=False),
            "toolkit_augment": _toolkit_loader(paths, labels, size, augment=True),
            "plain": _plain_loader(paths, labels, size, augment=False, resampling="bilinear"),
            "plain_augment": _plain_loader(paths, labels, size, augment=True, resampling="bilinear"),
            "plain_nearest": _plain_loader(paths, labels, size, augment=False, resampling="nearest"),
            "decode_turbojpeg": _turbojpeg_decoder(blobs, ratio, frame_shape, pool),
            "decode_opencv": _opencv_decoder(blobs, ratio, pool),
            "decode_tensorflow": _tensorflow_decoder(blobs, ratio),
            "resize": _resizer(decoded, partial(resize_image, size=size), pool),
            "resize_bilinear": _resizer(decoded, partial(cv2.resize, dsize=(size[1], size[0]),
                                                         interpolation=cv2.INTER_LINEAR), pool),
        }
        logger.info("Input pipeline at %dx%d: %d rounds of %d frames (%dx%d JPEGs, DCT reduction 1/%d)",
                    size[0], size[1], rounds, n_frames, frame_shape[1], frame_shape[0], ratio)
        with pool:
            timings = interleave(variants, rounds, warm_up=("toolkit", "toolkit_augment", "decode_tensorflow"))
        settings = {"size": list(size), "frame_size": [frame_shape[0], frame_shape[1]], "dct_ratio": ratio,
                    "batch_size": BATCH_SIZE, "frames_per_round": n_frames, "decode_threads": threads}
        results.extend(_results_for_size(size, timings, settings))
    return results
