"""Feature extraction: ``extract_features`` on a cache miss against ``predict`` on frames already in memory.

Variants, each run once per round on the same frames with MobileNet (width 0.25) ImageNet weights at
224x224:

- ``extract_features``: ``kaggle_sf.features.extract_features`` into a new cache folder, so every round
  is a cache miss: it builds the backbone, reads and decodes the JPEGs, runs the forward passes and
  writes the HDF5 file;
- ``predict_in_memory``: ``predict`` of the same backbone, built once, on the frames decoded
  beforehand into a uint8 array, as the fine-tuning search keeps them.

Their ratio is what the pipeline around the forward passes costs. A third row times
``extract_features`` on a cache hit, which reads the HDF5 file back.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from benchmarks.common import Result, interleave, load_average, rate_result, sample_train_frames

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
SIZE = (224, 224)


def run_features(data_dir: Path, work_dir: Path, n_frames: int, rounds: int) -> list[Result]:
    """Measure frames per second of feature extraction; see the module docstring.

    Args:
        data_dir: competition files.
        work_dir: the cache folders of the rounds go under ``<work_dir>/features/``.
        n_frames: training frames per round.
        rounds: rounds of each variant.
    """
    import time

    from kaggle_sf.config import BackboneConfig
    from kaggle_sf.data.images import read_images
    from kaggle_sf.features import extract_features
    from kaggle_sf.models.backbones import build_backbone

    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=SIZE, weights="imagenet")
    frames = sample_train_frames(data_dir, n_frames).loc[:, ["img", "path"]]
    folder = Path(work_dir) / "features"
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("Feature extraction: %d rounds of %d frames at %dx%d", rounds, len(frames), *SIZE)

    model = build_backbone(backbone, pooling="avg")
    decoded = read_images(frames["path"].tolist(), SIZE)

    def extract(round_number: int) -> int:
        subset = frames.head(BATCH_SIZE) if round_number < 0 else frames
        features = extract_features(backbone, subset, folder / f"round_{round_number}", split="train",
                                    batch_size=BATCH_SIZE)
        return len(features.ids)

    def predict(round_number: int) -> int:
        subset = decoded[:BATCH_SIZE] if round_number < 0 else decoded
        return len(model.predict(subset, batch_size=BATCH_SIZE, verbose=0))

    timings = interleave({"extract_features": extract, "predict_in_memory": predict}, rounds,
                         warm_up=("extract_features", "predict_in_memory"))
    settings = {"backbone": backbone.label, "weights": "imagenet", "batch_size": BATCH_SIZE,
                "frames_per_round": len(frames)}

    started = time.perf_counter()
    hit = extract_features(backbone, frames, folder / "round_0", split="train", batch_size=BATCH_SIZE)
    hit_seconds = time.perf_counter() - started
    return [
        rate_result("features/extract_features", timings, "extract_features", "predict_in_memory", settings),
        rate_result("features/predict_in_memory", timings, "predict_in_memory", None, settings),
        Result(name="features/cache_hit", value=len(hit.ids) / hit_seconds, unit="frames/s", ratio=None,
               frames=len(hit.ids), seconds=hit_seconds,
               settings={**settings, "load_average_1min": load_average()}),
    ]
