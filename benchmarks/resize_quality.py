"""Resize quality: out-of-fold log loss and CPU time of the resize filters the pipeline could use.

The antialiased resize costs about half as much CPU time as the reduced JPEG decode, so it decides how
close the pipeline gets to the decoding limit. This benchmark measures what a cheaper filter would
cost in accuracy. Every training frame is decoded once, at the DCT reduction the toolkit uses for
192x256, the default config's input size. Each filter then resizes the same decoded frames:

- ``toolkit``: ``kaggle_sf.data.images.resize_image``, 2x supersampling;
- ``opencv_area``: OpenCV's area averaging (``INTER_AREA``);
- ``opencv_bilinear``: OpenCV's bilinear sampling (``INTER_LINEAR``), not antialiased;
- ``tensorflow_antialiased_bilinear``: ``tf.image.resize(method="bilinear", antialias=True)``.

MobileNet (width 0.25) features of the resized frames train a head per driver fold with the search's
``fit_head`` at the default head settings, over several seeds. The rows give the mean out-of-fold log
loss per filter, its difference from the toolkit's in each seed, and the wall time of one resize of
one frame. OpenCV runs on one thread for it, while TensorFlow's resize runs on TensorFlow's own thread
pool, which may use more than one core.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result, load_average

logger = logging.getLogger(__name__)

SIZE = (192, 256)


def _filters():
    import cv2
    import tensorflow as tf

    from kaggle_sf.data.images import resize_image

    height, width = SIZE
    return {
        "toolkit": lambda frame: resize_image(frame, SIZE),
        "opencv_area": lambda frame: cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA),
        "opencv_bilinear": lambda frame: cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR),
        "tensorflow_antialiased_bilinear": lambda frame: tf.image.resize(
            frame, SIZE, method="bilinear", antialias=True).numpy(),
    }


def _milliseconds_per_frame(resize, frames: list[np.ndarray]) -> float:
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        resize(frames[0])
        started = time.perf_counter()
        for frame in frames:
            resize(frame)
        return 1000 * (time.perf_counter() - started) / len(frames)
    finally:
        cv2.setNumThreads(threads)


def _oof_log_loss(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, seed: int) -> float:
    from kaggle_sf.config import HeadConfig
    from kaggle_sf.metrics import log_loss
    from kaggle_sf.search.head_training import fit_head

    oof = np.zeros((len(labels), 10))
    for fold in np.unique(folds[folds >= 0]):
        validation = folds == fold
        fit = fit_head(features[~validation], labels[~validation], features[validation], labels[validation],
                       HeadConfig(), seed)
        oof[validation] = fit.probabilities
    scored = folds >= 0
    return log_loss(labels[scored], oof[scored])


def run_resize_quality(data_dir: Path, seeds: int, timed_frames: int = 200,
                       weights: str = "imagenet") -> list[Result]:
    """Measure each filter's out-of-fold log loss and resize time; see the module docstring.

    Args:
        data_dir: competition files with full-resolution frames.
        seeds: head-training seeds per filter.
        timed_frames: frames resized to time each filter.
        weights: the backbone's weights; ``none`` gives random ones, for a test of this code only.
    """
    from kaggle_sf.config import BackboneConfig
    from kaggle_sf.data.catalog import load_catalog
    from kaggle_sf.data.folds import make_folds
    from kaggle_sf.data.images import decode_image
    from kaggle_sf.models.backbones import build_backbone
    from kaggle_sf.train import class_indices

    started = time.perf_counter()
    train = load_catalog(Path(data_dir)).train.reset_index(drop=True)
    folds = make_folds(train, min(5, train["subject"].nunique()), 42)["fold"].to_numpy()
    labels = class_indices(train["classname"])
    decoded = [decode_image(Path(path).read_bytes(), SIZE) for path in train["path"]]
    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=SIZE, weights=weights)
    model = build_backbone(backbone, pooling="avg")
    logger.info("Resize quality: %d frames decoded at %dx%d, %d filters, %d seeds",
                len(decoded), decoded[0].shape[1], decoded[0].shape[0], len(_filters()), seeds)

    losses: dict[str, list[float]] = {}
    milliseconds: dict[str, float] = {}
    for name, resize in _filters().items():
        milliseconds[name] = _milliseconds_per_frame(resize, decoded[:timed_frames])
        frames = np.stack([resize(frame) for frame in decoded]).astype(np.float32)
        features = model.predict(frames, batch_size=32, verbose=0)
        losses[name] = [_oof_log_loss(features, labels, folds, seed) for seed in range(seeds)]
        logger.info("%s: out-of-fold log loss %s, %.3f ms per frame", name,
                    " ".join(f"{loss:.4f}" for loss in losses[name]), milliseconds[name])

    seconds = time.perf_counter() - started
    settings = {"size": list(SIZE), "decoded_size": list(decoded[0].shape[:2]), "frames": len(decoded),
                "backbone": backbone.label, "weights": weights, "seeds": seeds,
                "load_average_1min": load_average()}
    results = []
    for name in losses:
        differences = [loss - base for loss, base in zip(losses[name], losses["toolkit"])]
        results.append(Result(
            name=f"resize_quality/{name}", value=statistics.mean(losses[name]), unit="log loss",
            ratio=None, frames=len(decoded), seconds=seconds,
            settings={**settings, "log_losses": [round(loss, 4) for loss in losses[name]],
                      "difference_from_toolkit": [round(difference, 4) for difference in differences],
                      "milliseconds_per_frame": round(milliseconds[name], 4)}))
    return results
