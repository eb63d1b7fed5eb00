"""Frames for explanations: read from image files, resized to a backbone's input size.

Image files go through the same decoder as the feature cache and the training pipeline
(``kaggle_sf.data.images.read_image``), so a model predicts exactly the probabilities it gave the frame
in the run. Video frames are resized with the same antialiased resize
(``kaggle_sf.data.images.resize_image``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

JPEG_SUFFIXES = (".jpg", ".jpeg")
IMAGE_SUFFIXES = (*JPEG_SUFFIXES, ".png", ".bmp")


class FrameError(ValueError):
    """An image file is missing or cannot be decoded."""


def read_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as a uint8 RGB array, shrunk to at most ``max_side`` pixels on its longer side.

    Raises:
        FrameError: the file is missing or OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"image {path} not found")
    # EXIF orientation is ignored, as the model's decoder ignores it, so a heatmap lines up with the frame.
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1]
        raise FrameError(f"{path} could not be decoded ({reason}); give a JPEG, PNG or BMP file") from error
    if image is None:
        raise FrameError(f"{path} could not be decoded as an image; give a JPEG, PNG or BMP file")
    if max_side is not None and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def resize_frames(frames: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB frames to (n, height, width, 3) float32 model input in [0, 255]."""
    from kaggle_sf.data.images import resize_image

    resized = np.empty((len(frames), *size, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        resize_image(np.ascontiguousarray(frame), size, out=resized[index])
    return resized.astype(np.float32)


def model_inputs(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """Read image files as (n, height, width, 3) float32 model input in [0, 255].

    Raises:
        FrameError: a file is missing or cannot be decoded.
    """
    from kaggle_sf.data.images import ImageDecodeError, read_image

    inputs = np.empty((len(paths), *size, 3), dtype=np.uint8)
    for index, path in enumerate(map(Path, paths)):
        if not path.is_file():
            raise FrameError(f"image {path} not found")
        try:
            read_image(str(path), size, out=inputs[index])
        except ImageDecodeError as error:
            raise FrameError(str(error)) from error
    return inputs.astype(np.float32)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Expand files and folders into image files: a folder gives its images, sorted by name.

    Raises:
        FrameError: a path does not exist, or a folder contains no image.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FrameError(f"folder {path} contains no image ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FrameError(f"image {path} not found")
    return files
