"""Bottleneck features cache: one forward pass of a backbone per image set, kept in HDF5.

A cache file is named by a key over everything that determines its contents (backbone, width, weights
file hash, input size, preprocessing, decoder, and the list of images with their sizes), so a changed
input gets a new file and an unchanged one is reused. Features are written batch by batch into a
preallocated dataset, so memory does not grow with the number of images, and the file is renamed into
place only when complete. Jobs that share a cache folder take a lock per cache file
(``<file>.lock``): while one job extracts, another that needs the same file waits, then reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from kaggle_sf.atomic import atomic_path, remove_stale_temporaries
from kaggle_sf.config import BackboneConfig
from kaggle_sf.crash import crash_point
from kaggle_sf.lock import exclusive
from kaggle_sf.models.backbones import get_spec, weights_fingerprint

logger = logging.getLogger(__name__)

DECODER_VERSION = "opencv-jpeg-dct-reduced-supersampled-bilinear-v4"
"""Changes whenever the decoded pixels change, so features cached by an older decoder are not reused.

A decoder that gives the same pixels, such as TurboJPEG beside OpenCV, keeps the version."""


@dataclass(frozen=True)
class Features:
    """Cached bottleneck features of one image set: ``values[i]`` belongs to image ``ids[i]``."""

    ids: np.ndarray
    values: np.ndarray
    path: Path

    def aligned(self, ids: pd.Series | list[str]) -> np.ndarray:
        """Return the feature rows of ``ids`` in that order, matched by id, never by position."""
        position = pd.Index(self.ids).get_indexer(list(ids))
        if (position < 0).any():
            missing = np.asarray(list(ids))[position < 0][0]
            raise KeyError(f"image {missing} has no features in {self.path}")
        return self.values[position]


def image_list_digest(images: pd.DataFrame) -> str:
    """Hash the ids, file names and sizes of an image table (columns ``img, path``)."""
    digest = hashlib.sha256()
    for img, path in zip(images["img"], images["path"]):
        digest.update(f"{img}\t{Path(path).name}\t{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def cache_key(backbone: BackboneConfig, images: pd.DataFrame) -> dict[str, object]:
    """Return everything that determines the features of ``images`` under ``backbone``."""
    return {
        "backbone": backbone.name,
        "alpha": backbone.alpha if backbone.name == "mobilenet" else None,
        "input_size": list(backbone.input_size),
        "preprocessing": get_spec(backbone.name).preprocessing,
        "weights_sha256": weights_fingerprint(backbone),
        "decoder": DECODER_VERSION,
        "images": image_list_digest(images),
        "n_images": len(images),
    }


def cache_path(cache_dir: Path, backbone: BackboneConfig, split: str, key: dict[str, object]) -> Path:
    """Return the cache file for a key: ``<cache_dir>/<backbone label>-<split>-<16 hex digits>.h5``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{backbone.label}-{split}-{digest}.h5"


def read_features(path: Path) -> Features:
    """Load a complete features file."""
    with h5py.File(path, "r") as handle:
        ids = handle["img"].asstr()[...]
        values = handle["features"][...]
    return Features(ids=np.asarray(ids), values=values, path=Path(path))


def _read_cached(path: Path, key: dict[str, object], n_images: int) -> Features | None:
    """Return the cached features at ``path``, or None (deleting the file) when it is unreadable or foreign."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            stored_key = handle.attrs.get("key")
        features = read_features(path)
    except (OSError, KeyError, ValueError) as error:
        problem = f"cannot be read ({error})"
    else:
        if stored_key != json.dumps(key, sort_keys=True):
            problem = "was written for another cache key"
        elif features.values.shape[0] != n_images or len(features.ids) != n_images:
            problem = f"holds {features.values.shape[0]} rows instead of {n_images}"
        else:
            return features
    logger.warning("Features cache file %s %s; deleting it and extracting again", path, problem)
    path.unlink(missing_ok=True)
    return None


def _write_features(backbone: BackboneConfig, images: pd.DataFrame, path: Path, key: dict[str, object],
                    split: str, batch_size: int) -> None:
    """Compute the features of ``images`` and write them to ``path``, renamed into place when complete."""
    from kaggle_sf.data.image_check import BadImageError
    from kaggle_sf.data.images import ImageDecodeError, decode_errors_named, image_dataset
    from kaggle_sf.models.backbones import build_backbone

    model = build_backbone(backbone, pooling="avg")
    dataset = image_dataset(images["path"], backbone.input_size, batch_size, ids=images["img"])
    n_features = model.output_shape[-1]

    logger.info("Extracting %s features of %d %s images into %s", backbone.label, len(images), split, path)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as handle:
            handle.attrs["key"] = json.dumps(key, sort_keys=True)
            values = handle.create_dataset("features", shape=(len(images), n_features), dtype="float32",
                                           chunks=(min(len(images), 1024), n_features))
            ids = handle.create_dataset("img", shape=(len(images),), dtype=h5py.string_dtype())
            written = 0
            with tqdm(total=len(images), desc=f"{backbone.label} {split} features", unit="img",
                      disable=None) as progress:
                try:
                    with decode_errors_named():
                        for batch_images, batch_ids in dataset:
                            # A compiled forward pass: calling the model eagerly took 2.3 times the CPU time
                            # (MobileNet-0.25, 224x224, batches of 32, TensorFlow 2.21).
                            batch_values = model.predict_on_batch(batch_images)
                            end = written + len(batch_values)
                            values[written:end] = batch_values
                            ids[written:end] = [i.decode() for i in batch_ids.numpy()]
                            written = end
                            progress.update(len(batch_values))
                            crash_point("features batch")
                except ImageDecodeError as error:
                    raise BadImageError(str(error)) from error
            if written != len(images):
                raise RuntimeError(f"feature extraction wrote {written} of {len(images)} images")


def extract_features(backbone: BackboneConfig, images: pd.DataFrame, cache_dir: Path, *,
                     split: str, batch_size: int = 32) -> Features:
    """Return the bottleneck features of ``images``, computing and caching them on a cache miss.

    A cache file that cannot be read, was written for another key or has the wrong number of rows is
    deleted and computed again. Temporary files left by a killed extraction of the same file are
    deleted first.

    Args:
        backbone: the backbone and its weights.
        images: table with columns ``img, path``.
        cache_dir: folder of the HDF5 cache files.
        split: ``train`` or ``test``; part of the file name only.
        batch_size: images per forward pass.

    Returns:
        The features, one row per image of ``images`` in the same order.

    Raises:
        BadImageError: TensorFlow cannot decode an image; the message names the file.
    """
    key = cache_key(backbone, images)
    path = cache_path(cache_dir, backbone, split, key)
    with exclusive(path.with_name(path.name + ".lock"), f"extracting {backbone.label} {split} features"):
        cached = _read_cached(path, key, len(images))
        if cached is not None:
            logger.info("Reusing cached %s features of %d %s images: %s", backbone.label, len(images), split, path)
            return cached
        remove_stale_temporaries(path.parent, path.name)
        _write_features(backbone, images, path, key, split, batch_size)
    return read_features(path)
