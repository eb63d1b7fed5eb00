"""The plain way to feed a Keras model, as ``ImageDataGenerator.flow_from_directory`` did in Keras 2.

One Python loop, one frame at a time: open the JPEG with Pillow at full size, convert it to RGB,
resize it, turn it into a float32 array and copy it into the batch. With augmentation each frame gets
its own random rotation, shift, shear and zoom, applied channel by channel with
``scipy.ndimage.affine_transform`` (bilinear, edges repeated), as ``ImageDataGenerator.random_transform``
did. This is the reference the toolkit's tf.data pipeline is measured against; it is not used by the
toolkit itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from kaggle_sf.data.augment import AugmentConfig

RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
"""Pillow filters for the resize. Keras' ``load_img`` used ``nearest`` by default; Pillow's ``bilinear``
widens its filter when shrinking, so it is antialiased like the toolkit's resize."""


def load_frame(path: str, size: tuple[int, int], resampling: str = "bilinear") -> np.ndarray:
    """Decode one JPEG at full size and resize it to ``size`` (height, width) as float32 in [0, 255]."""
    height, width = size
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((width, height), RESAMPLING[resampling])
    return np.asarray(resized, dtype=np.float32)


def random_affine_matrix(rng: np.random.Generator, size: tuple[int, int], config: AugmentConfig) -> np.ndarray:
    """Return a random 3x3 matrix that maps output (row, column) to input coordinates about the centre.

    Rotation, shear and zoom ranges are those of ``AugmentConfig``; zoom is drawn per axis, as
    ``ImageDataGenerator`` drew it.
    """
    height, width = size
    angle = math.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
    shear = rng.uniform(-config.shear_fraction, config.shear_fraction)
    zoom_rows, zoom_columns = rng.uniform(1 - config.zoom_fraction, 1 + config.zoom_fraction, size=2)
    shift_rows = rng.uniform(-config.shift_fraction, config.shift_fraction) * height
    shift_columns = rng.uniform(-config.shift_fraction, config.shift_fraction) * width

    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    shearing = np.array([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]])
    zooming = np.diag([zoom_rows, zoom_columns, 1.0])
    shifting = np.array([[1, 0, shift_rows], [0, 1, shift_columns], [0, 0, 1]])
    # Transform about the frame's centre: move the centre to the origin, transform, move it back.
    centre_rows, centre_columns = (height - 1) / 2, (width - 1) / 2
    to_origin = np.array([[1, 0, -centre_rows], [0, 1, -centre_columns], [0, 0, 1]])
    back = np.array([[1, 0, centre_rows], [0, 1, centre_columns], [0, 0, 1]])
    return back @ shifting @ rotation @ shearing @ zooming @ to_origin


def warp_frame(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 3x3 output-to-input matrix to each channel of a (height, width, 3) frame."""
    channels = [ndimage.affine_transform(frame[..., channel], matrix[:2, :2], offset=matrix[:2, 2], order=1,
                                         mode="nearest")
                for channel in range(frame.shape[-1])]
    return np.stack(channels, axis=-1)


def plain_batches(paths: Sequence[str], labels: Sequence[int], size: tuple[int, int], batch_size: int, *,
                  augment: AugmentConfig | None = None, resampling: str = "bilinear",
                  seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield shuffled ``(frames, labels)`` training batches, loading and warping one frame at a time.

    Args:
        paths, labels: the training frames and their class indices.
        size: (height, width) of the frames.
        batch_size: frames per batch; the last batch may be smaller.
        augment: ranges of the random warp; None leaves the frames as loaded.
        resampling: ``bilinear`` or ``nearest``, the Pillow filter of the resize.
        seed: seed of the shuffle and of the warps.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    height, width = size
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        frames = np.zeros((len(rows), height, width, 3), dtype=np.float32)
        for slot, row in enumerate(rows):
            frame = load_frame(paths[row], size, resampling)
            if augment is not None:
                frame = warp_frame(frame, random_affine_matrix(rng, size, augment))
            frames[slot] = frame
        yield frames, np.asarray([labels[row] for row in rows], dtype=np.int64)
