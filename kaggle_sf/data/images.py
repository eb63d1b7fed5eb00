"""Image decoding into batches of RGB frames at a backbone's input size, with ids alongside.

JPEGs are decoded by libjpeg at 1/2, 1/4 or 1/8 scale whenever the reduced image is still at least the
target size. A 640x480 frame needed at 224x224 is decoded at 320x240, which takes about half the time
of a full decode. A frame smaller than the target on either side is decoded at full size. Grayscale and
CMYK JPEGs come out as RGB; PNG, GIF, BMP and WebP data in a ``.jpg`` file is decoded by its format.
The result is resized to the target and returned as float32 in [0, 255]; preprocessing for the
backbone happens inside the model. Files that cannot be decoded are found beforehand by
``kaggle_sf.data.image_check``.

The resize is antialiased. A frame that shrinks on both sides is averaged over the area each output
pixel covers, and a frame that grows on either side goes through TensorFlow's antialiased bilinear
filter. On a 2-core CPU with TensorFlow 2.21, the antialiased bilinear filter had cost more than the
reduced decode itself; with area averaging the input-pipeline benchmark ran 1.6 to 2 times faster.
The accuracy cost was measured on MobileNet-0.25 features at 192x256 of the 1,171 full-resolution
training frames, with heads on 5 driver folds, over 4 seeds. The out-of-fold log loss was 1.629 with
the antialiased bilinear filter, 1.635 with area averaging and 1.642 with plain bilinear sampling, in
that order in every seed. ``benchmarks/README.md`` has the speed measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

DCT_SCALES = (8, 4, 2, 1)
"""Reduction ratios that libjpeg can apply while decoding, largest first."""


def _decode_reduced(contents: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Decode a JPEG at the largest DCT reduction that still covers ``size`` (height, width)."""
    shape = tf.io.extract_jpeg_shape(contents)
    height, width = size
    # Index of the first (largest) ratio that keeps both sides at or above the target. Full size always
    # qualifies, so that a frame smaller than the target (80x60 needed at 224x224) is not reduced further.
    fits = [tf.logical_and(shape[0] // ratio >= height, shape[1] // ratio >= width) for ratio in DCT_SCALES[:-1]]
    fits.append(tf.constant(True))
    choice = tf.argmax(tf.cast(tf.stack(fits), tf.int32), output_type=tf.int32)
    branches = [
        (lambda r=ratio: tf.io.decode_jpeg(contents, channels=3, ratio=r, dct_method="INTEGER_FAST"))
        for ratio in DCT_SCALES
    ]
    return tf.switch_case(choice, branches)


def _decode_other_format(contents: tf.Tensor) -> tf.Tensor:
    """Decode PNG, GIF (first frame), BMP or WebP data to RGB at full size."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def decode_image(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read and decode one image file to a float32 RGB tensor of shape (height, width, 3) in [0, 255]."""
    contents = tf.io.read_file(path)
    image = tf.cond(tf.io.is_jpeg(contents), lambda: _decode_reduced(contents, size),
                    lambda: _decode_other_format(contents))
    return tf.ensure_shape(resize_image(image, size), (*size, 3))


def resize_image(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resize a frame ``(h, w, 3)`` or a batch ``(n, h, w, 3)`` to ``size`` as float32, antialiased.

    Frames that shrink or keep their size on both sides are area-averaged. Frames that grow on either
    side go through TensorFlow's antialiased bilinear filter, because area averaging would repeat their
    pixels in blocks.
    """
    shape = tf.shape(images)
    shrinks = tf.logical_and(shape[-3] >= size[0], shape[-2] >= size[1])
    return tf.cond(shrinks, lambda: tf.image.resize(images, size, method="area"),
                   lambda: tf.image.resize(images, size, method="bilinear", antialias=True))


def image_dataset(paths: Sequence[str], size: tuple[int, int], batch_size: int, *,
                  ids: Sequence[str] | None = None, labels: Sequence[int] | None = None,
                  shuffle: bool = False, seed: int = 0,
                  augment: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None,
                  repeat: bool = False) -> tf.data.Dataset:
    """Build a batched, prefetched dataset of decoded frames.

    Args:
        paths: JPEG files.
        size: (height, width) of the output frames.
        batch_size: frames per batch.
        ids: image ids travelling with the frames; yields ``(images, ids)`` when given without labels.
        labels: class indices; yields ``(images, labels)`` (for training).
        shuffle: shuffle the files each epoch, seeded.
        seed: shuffle seed.
        augment: a batched function ``(images, labels, seed) -> (images, labels)`` applied after
            batching, with a fresh shape-(2,) seed per batch drawn from a stream seeded by ``seed``.
        repeat: repeat indefinitely (training with ``steps_per_epoch``).

    Returns:
        A ``tf.data.Dataset`` of ``(images, ids)``, ``(images, labels)`` or ``images`` batches.
    """
    paths = [str(p) for p in paths]
    columns: list[tf.Tensor] = [tf.constant(paths)]
    if labels is not None:
        columns.append(tf.constant(list(labels), dtype=tf.int32))
    elif ids is not None:
        columns.append(tf.constant([str(i) for i in ids]))
    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns))

    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def load(path: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (decode_image(path, size), *rest)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    if augment is not None:
        batch_seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, batch_seeds))
        dataset = dataset.map(lambda batch, batch_seed: augment(*batch, batch_seed),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if len(columns) == 1:
        dataset = dataset.map(lambda images: images)
    return dataset.prefetch(tf.data.AUTOTUNE)
