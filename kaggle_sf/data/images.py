"""Image decoding into batches of RGB frames at a backbone's input size, with ids alongside.

Frames are decoded and resized a batch at a time inside the tf.data pipeline. Both decoders and the
resize release the GIL, so tf.data's parallel calls keep every core busy.

JPEGs are decoded by libjpeg-turbo's TurboJPEG API (the ``simplejpeg`` package), at 1/2, 1/4 or 1/8
scale whenever the reduced image is still at least the target size. A 640x480 frame needed at 224x224
is decoded at 320x240, which takes about three quarters of the time of a full decode. A frame smaller
than the target on either side is decoded at full size. Any JPEG that TurboJPEG reports a problem
with, and any other format, goes to OpenCV, whose libjpeg-turbo gives the same pixels. OpenCV thus
decides which files fail, and names them. Grayscale and CMYK JPEGs come out as RGB, and PNG, GIF, BMP,
WebP and TIFF data in a ``.jpg`` file is decoded by its format. EXIF orientation is ignored, as
TensorFlow's and Keras' loaders ignore it.

The resize is antialiased (see ``resize_image``). Frames leave the decoder as uint8, pass through the
training augmentations as uint8, and are cast to float32 in [0, 255] per batch. Preprocessing for the
backbone happens inside the model. Files that cannot be decoded are found beforehand by
``kaggle_sf.data.image_check``; one that fails here anyway raises ``ImageDecodeError`` naming it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import cv2
import numpy as np
import simplejpeg

logger = logging.getLogger(__name__)

DCT_SCALES = (8, 4, 2, 1)
"""Reduction ratios that libjpeg can apply while decoding, largest first."""

MAX_SUPERSAMPLED_SHRINK = 2.5
"""Largest shrink factor that ``resize_image`` handles by 2x supersampling; larger ones are area-averaged first."""

# The IMREAD_REDUCED_COLOR_* flags include the IMREAD_COLOR (BGR) bit, which OpenCV rejects together
# with IMREAD_COLOR_RGB, so that bit is cleared.
READ_FLAGS: dict[int, int] = {
    ratio: (reduced & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    for ratio, reduced in ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2),
                           (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))
}
"""OpenCV read flags per DCT reduction: RGB channel order, EXIF orientation ignored."""

# Start-of-frame markers carry the image size: SOF0 to SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_START_OF_SCAN = 0xDA


class ImageDecodeError(ValueError):
    """An image file is missing or its contents cannot be decoded."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        # What failed, without the file name and the fix, for the image check's list of bad files.
        self.reason = reason or message


# --- One frame -------------------------------------------------------------------------------------


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Return the (height, width) in a JPEG's start-of-frame header, or None for data that is not a JPEG.

    Markers are found as libjpeg finds them: bytes between segments that are not a marker, and ``FF 00``
    pairs, are skipped, so a start-of-frame hidden in such bytes is not taken for the real one.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            # Junk between segments, which libjpeg skips with a warning.
            position += 1
            continue
        marker = data[position + 1]
        if marker == 0xFF:
            # A fill byte before the marker.
            position += 1
            continue
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            # A stuffed zero or a marker without a length field.
            position += 2
            continue
        if marker in _SOF_MARKERS:
            if position + 9 > len(data):
                return None
            return (int.from_bytes(data[position + 5:position + 7], "big"),
                    int.from_bytes(data[position + 7:position + 9], "big"))
        if marker == _START_OF_SCAN:
            return None
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


def dct_reduction(frame_size: tuple[int, int] | None, size: tuple[int, int]) -> int:
    """Return the largest DCT reduction that keeps a (height, width) frame at least ``size``; 1 when unknown."""
    if frame_size is None:
        return 1
    for ratio in DCT_SCALES:
        if frame_size[0] // ratio >= size[0] and frame_size[1] // ratio >= size[1]:
            return ratio
    return 1


def reduced_size(frame_size: tuple[int, int], ratio: int) -> tuple[int, int]:
    """Return the (height, width) of a frame decoded at 1/``ratio`` scale: libjpeg rounds each side up."""
    return -(-frame_size[0] // ratio), -(-frame_size[1] // ratio)


OPENCV_MAX_SIDE = 1 << 20
OPENCV_MAX_PIXELS = 1 << 30
"""OpenCV's default limits on a decoded image, after any DCT reduction.

Larger JPEGs go to OpenCV, which rejects them."""


def _turbojpeg_decode(data: bytes, ratio: int, frame_size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Decode a JPEG at 1/``ratio`` scale with TurboJPEG; return the frame and an empty error message.

    On a State Farm 640x480 frame, one thread of a 2-core x86_64 machine, TurboJPEG took 0.70 ms at
    full size where OpenCV took 0.83 ms, and 0.55 ms against 0.61 ms at 1/2 scale. Both run
    libjpeg-turbo with its accurate integer IDCT and smooth chroma upsampling, and gave the same
    pixels on every frame tried.

    The frame is None, for OpenCV to decode the data instead, in three cases. TurboJPEG reports a
    problem, even one libjpeg recovers from, and the message is TurboJPEG's. The decoded size is not
    the header's, or the image is beyond OpenCV's limits, and the message is empty.

    NOTE: a damaged progressive JPEG whose header claims a huge size is allocated and decoded twice,
    by TurboJPEG and then by OpenCV: the same memory, about twice the time.
    """
    expected = reduced_size(frame_size, ratio)
    if max(expected) > OPENCV_MAX_SIDE or expected[0] * expected[1] > OPENCV_MAX_PIXELS:
        return None, ""
    try:
        image = simplejpeg.decode_jpeg(data, "RGB", min_height=expected[0], min_width=expected[1],
                                       min_factor=ratio)
    except ValueError as error:
        return None, str(error)
    return (image, "") if image.shape[:2] == expected else (None, "")


_logged_files: set[str] = set()
_logged_lock = threading.Lock()


DAMAGE_MESSAGES = ("Corrupt JPEG data", "Premature end of JPEG file")
"""Starts of libjpeg's warnings about damaged data, which it recovers from by skipping or filling in."""


def _log_recovered(name: str, message: str) -> None:
    """Log once per file that TurboJPEG rejected a JPEG which OpenCV then decoded.

    Damaged data is a warning, because libjpeg prints its own warning for such a file without the
    file's name. Anything else TurboJPEG does not take, such as unusual chroma sampling, is only logged
    at debug level.
    """
    with _logged_lock:
        if name in _logged_files:
            return
        _logged_files.add(name)
    if message.startswith(DAMAGE_MESSAGES):
        logger.warning("%s: libjpeg reported '%s' and decoded it anyway; check the file if its frames look "
                       "damaged", name, message)
    else:
        logger.debug("%s: TurboJPEG cannot decode it (%s); decoded with OpenCV instead", name, message)


def _imdecode(data: bytes, ratio: int, name: str) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), READ_FLAGS[ratio]) if data else None
    except cv2.error as error:
        # OpenCV raises rather than returning None for sizes beyond its limits (2**20 pixels a side).
        reason = f"OpenCV cannot decode it: {str(error).strip().splitlines()[-1]}"
        raise ImageDecodeError(f"{name}: {reason}; replace the file with a JPEG the size of the other frames",
                               reason) from error
    if image is None:
        reason = "OpenCV cannot decode it: the data is empty, truncated or not an image"
        raise ImageDecodeError(f"{name}: {reason}; replace or delete the file and run again", reason)
    return image


def decode_image(data: bytes, size: tuple[int, int], name: str = "image") -> np.ndarray:
    """Decode image file contents to a uint8 RGB array, at a DCT reduction chosen for ``size`` if a JPEG.

    The result is at least ``size`` on both sides when the frame is, and is not resized.

    Raises:
        ImageDecodeError: the contents are empty, truncated or not an image; ``name`` appears in the message.
    """
    frame_size = jpeg_size(data)
    ratio = dct_reduction(frame_size, size)
    image, message = _turbojpeg_decode(data, ratio, frame_size) if frame_size is not None else (None, "")
    if image is None:
        image = _imdecode(data, ratio, name)
        if message:
            _log_recovered(name, message)
    if ratio > 1 and (image.shape[0] < size[0] or image.shape[1] < size[1]):
        # The header's size was not the image's: decode again without a reduction.
        image = _imdecode(data, 1, name)
    return image


@contextmanager
def decode_errors_named() -> Iterator[None]:
    """Re-raise a decode failure inside a tf.data pipeline as the ``ImageDecodeError`` that names the file.

    ``tf.numpy_function`` turns the error into a TensorFlow error whose message wraps the original one.
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        found = re.search(r"ImageDecodeError: (.+)", error.message or "")
        if found is None:
            raise
        raise ImageDecodeError(found.group(1).strip()) from error


def resize_image(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize one (height, width, channels) frame to ``size``, antialiased when it shrinks.

    A frame that grows or keeps its size on both sides is interpolated bilinearly. A frame that
    shrinks on either side is resized bilinearly to twice the target and then averaged over 2x2
    blocks, which OpenCV does with fixed-point SIMD code. A side that shrinks by more than
    ``MAX_SUPERSAMPLED_SHRINK`` is first area-averaged to twice the target, so that the bilinear step
    never skips input pixels.

    The ``resize_quality`` benchmark compares filters on the full-resolution State Farm frames at
    192x256 (OpenCV 5.1, TensorFlow 2.21, 2-core x86_64). This 2x supersampling took about half the
    CPU time of OpenCV's area averaging and gave a lower out-of-fold log loss in every seed. Plain
    bilinear sampling took a third to a half of its time and gave a higher loss. TensorFlow's
    antialiased bilinear filter gave a slightly lower loss at five to six times its time.
    ``benchmarks/README.md`` has the numbers.

    Args:
        image: the frame, usually uint8 RGB.
        size: (height, width) of the result.
        out: array of shape ``(*size, channels)`` and the frame's dtype to write into, e.g. one frame of a batch.

    Returns:
        The resized frame (``out`` when given).
    """
    height, width = size
    frame_height, frame_width = image.shape[:2]
    if (frame_height, frame_width) == (height, width):
        if out is None:
            return image.copy()
        out[...] = image
        return out

    if frame_height > MAX_SUPERSAMPLED_SHRINK * height or frame_width > MAX_SUPERSAMPLED_SHRINK * width:
        reduced = (min(frame_width, 2 * width), min(frame_height, 2 * height))
        image = cv2.resize(image, reduced, interpolation=cv2.INTER_AREA)
        frame_height, frame_width = image.shape[:2]

    if frame_height <= height and frame_width <= width:
        return cv2.resize(image, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    # The 2x2 blocks of the doubled image are centred on the target's pixel centres, so the result is
    # not shifted. OpenCV averages exact 2x2 blocks with its fast integer-scale area path.
    doubled = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(doubled, (width, height), dst=out, interpolation=cv2.INTER_AREA)


def read_image(path: str, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Read an image file as a uint8 RGB frame of ``size`` (height, width).

    Raises:
        ImageDecodeError: the file is missing, empty, truncated or not an image.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ImageDecodeError(f"cannot read image {path}: {error.strerror}", error.strerror) from error
    return resize_image(decode_image(data, size, name=str(path)), size, out=out)


def read_images(paths: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    """Read image files into one uint8 array of shape (n, height, width, 3)."""
    frames = np.empty((len(paths), *size, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        read_image(path, size, out=frames[index])
    return frames


class DecodedFrames:
    """Image files decoded and resized once, held in memory as one uint8 array with a row per file.

    Training reads its batches from here instead of decoding the files again every epoch. The frames
    are the ones ``read_image`` returns, so batches drawn from here equal those decoded from the files.
    """

    def __init__(self, paths: Sequence[str], size: tuple[int, int], threads: int | None = None) -> None:
        """Decode ``paths`` at ``size`` (height, width) on ``threads`` threads (one per CPU by default).

        Raises:
            ImageDecodeError: a file is missing or cannot be decoded; the message names it.
        """
        self.paths = [str(path) for path in paths]
        self.size = (int(size[0]), int(size[1]))
        self.frames = np.empty((len(self.paths), *size, 3), dtype=np.uint8)
        # Paths are looked up in normal form, so that "a/./b.jpg" finds the frame of "a/b.jpg".
        self._rows = {os.path.normpath(path): row for row, path in enumerate(self.paths)}

        def read(row: int) -> None:
            read_image(self.paths[row], size, out=self.frames[row])

        # The decoders and OpenCV's resize release the GIL, so the threads use every core.
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            for _ in pool.map(read, range(len(self.paths))):
                pass

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Return the row of each of ``paths``.

        Raises:
            KeyError: a path was not decoded here; the message names it.
        """
        try:
            return np.array([self._rows[os.path.normpath(str(path))] for path in paths], dtype=np.int64)
        except KeyError as error:
            raise KeyError(f"{error.args[0]} is not among the {len(self.paths)} decoded frames; decode every "
                           "frame that the dataset reads, e.g. training and validation frames together") from None

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Return a copy of the frames at ``rows``, in that order."""
        return self.frames[rows]


# --- Batches ---------------------------------------------------------------------------------------


def without_autotuning(dataset):
    """Return ``dataset`` with tf.data's autotuning turned off.

    With it on (TensorFlow 2.21, 2-core CPU), ``model.fit`` over a fresh iterator returned late in
    4 to 7 of 12 calls: after the last step it waited until the iterator had lived 2.55, 5.11 or
    10.23 s. A fine-tuning epoch of 6.5 s then took 10.2 s. Off, every ``AUTOTUNE``
    parallel map runs min(16, CPU cores) calls at once, and prefetch buffers still grow on demand.
    The input pipeline benchmark ran at the same rate either way.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _read_batch(paths: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Read a batch of file names (bytes, as tf.numpy_function passes strings) into uint8 frames."""
    return read_images([path.decode() for path in paths], size)


def _weak_take(decoded: DecodedFrames) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``decoded.take`` through a weak reference.

    TensorFlow keeps every ``tf.numpy_function`` callable for the life of the process, so a strong
    reference would keep the whole frame array in memory after training ends.
    """
    reference = weakref.ref(decoded)

    def take(rows: np.ndarray) -> np.ndarray:
        frames = reference()
        if frames is None:
            raise RuntimeError("the decoded frames were freed while a dataset still reads them; keep the "
                               "DecodedFrames object alive until the dataset is no longer used")
        return frames.take(rows)

    return take


def image_dataset(paths: Sequence[str], size: tuple[int, int], batch_size: int, *,
                  ids: Sequence[str] | None = None, labels: Sequence[int] | None = None,
                  shuffle: bool = False, seed: int = 0,
                  augment: Callable | None = None, repeat: bool = False,
                  decoded: DecodedFrames | None = None):
    """Build a batched, prefetched dataset of decoded frames.

    Args:
        paths: image files.
        size: (height, width) of the output frames.
        batch_size: frames per batch.
        ids: image ids travelling with the frames; yields ``(images, ids)`` when given without labels.
        labels: class indices; yields ``(images, labels)`` (for training).
        shuffle: shuffle the files each epoch, seeded.
        seed: shuffle seed.
        augment: a batched function ``(images, labels, seed) -> (images, labels)`` applied to uint8
            batches, with a fresh shape-(2,) seed per batch drawn from a stream seeded by ``seed``.
        repeat: repeat indefinitely (training with ``steps_per_epoch``).
        decoded: frames decoded beforehand at ``size``, including every one of ``paths``. Batches are
            copied from there instead of decoded, and come out the same and in the same order.

    Returns:
        A ``tf.data.Dataset`` of ``(images, ids)``, ``(images, labels)`` or ``images`` batches, the
        images float32 in [0, 255] of shape (batch, height, width, 3). Batches come in a fixed order
        for a given seed.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    if decoded is not None and decoded.size != tuple(size):
        raise ValueError(f"frames decoded at {decoded.size} cannot make batches at {tuple(size)}")
    # The first column is what a batch is made from: file names, or rows of the decoded frames.
    columns: list[tf.Tensor] = [tf.constant(paths, dtype=tf.string) if decoded is None
                                else tf.constant(decoded.rows(paths), dtype=tf.int64)]
    if labels is not None:
        columns.append(tf.constant(list(labels), dtype=tf.int32))
    elif ids is not None:
        columns.append(tf.constant([str(i) for i in ids]))
    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns))

    if shuffle:
        # tf.data rejects a buffer of 0, which an empty list would ask for.
        dataset = dataset.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=False)

    read_batch = partial(_read_batch, size=size) if decoded is None else _weak_take(decoded)

    def load(batch_sources: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images = tf.numpy_function(read_batch, [batch_sources], tf.uint8, stateful=False)
        images.set_shape((None, *size, 3))
        return (images, *rest)

    # A whole batch per call keeps the Python work per frame small next to decoding.
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        batch_seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, batch_seeds))
        dataset = dataset.map(lambda batch, batch_seed: augment(*batch, batch_seed),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if len(columns) == 1:
        dataset = dataset.map(lambda images: tf.cast(images, tf.float32))
    else:
        dataset = dataset.map(lambda images, *rest: (tf.cast(images, tf.float32), *rest))
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))
