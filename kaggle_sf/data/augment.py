"""Training augmentations that generalise to new drivers, applied to whole batches inside tf.data.

Two kinds, with their random draws made for the whole batch at once:

- a small random affine warp per frame (rotation, shift, shear, zoom), never a horizontal flip: the
  left-hand and right-hand classes (c1/c3 texting, c2/c4 phone) mirror each other, so a flip would
  turn a correct label into a wrong one;
- the same-class half merge: with probability p, one half of a frame (left, right, top or bottom) is
  replaced by the same half of another frame of the same class in the batch. The merged frame shows
  two drivers and two backgrounds with one label, so the driver and the car stop being evidence.

The random draws are stateless TensorFlow ops, so a seed gives the same augmentation in any process.
The pixels are moved by OpenCV and NumPy inside ``tf.numpy_function``, on the uint8 batches that
``image_dataset`` decodes. On a batch of 224x224 frames the warp took a quarter and the half merge a
fifth of the CPU time of TensorFlow's ``ImageProjectiveTransformV3`` and a masked ``tf.where``
(TensorFlow 2.21, OpenCV 5.1, 2-core x86_64).
OpenCV releases the GIL while it warps, so tf.data's parallel calls overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random warp and the half-merge probability."""

    rotation_degrees: float = 10.0
    shift_fraction: float = 0.05
    shear_fraction: float = 0.1
    zoom_fraction: float = 0.1
    half_merge_probability: float = 0.3


def _affine_matrices(batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor, config: AugmentConfig,
                     seed: tf.Tensor) -> tf.Tensor:
    """Return one random output-to-input projective transform per frame, shape (batch, 8)."""
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def uniform(index: int, limit: float) -> tf.Tensor:
        return tf.random.stateless_uniform((batch,), seeds[index], -limit, limit)

    angle = uniform(0, math.radians(config.rotation_degrees))
    shear = uniform(1, config.shear_fraction)
    zoom = 1.0 + uniform(2, config.zoom_fraction)
    shift_x = uniform(3, config.shift_fraction) * width
    shift_y = uniform(4, config.shift_fraction) * height

    # Map each output pixel back to the input: move the centre to the origin, rotate, shear and scale,
    # move back and shift. The inverse of a zoom-in is a scale below one.
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    centre_x, centre_y = width / 2.0, height / 2.0
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    a2 = centre_x - a0 * centre_x - a1 * centre_y + shift_x
    b2 = centre_y - b0 * centre_x - b1 * centre_y + shift_y
    zeros = tf.zeros_like(angle)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _warp_frames(images: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Warp each frame by its (8,) output-to-input transform, bilinear, with edge pixels repeated outside."""
    height, width = images.shape[1:3]
    warped = np.empty_like(images)
    for index, (frame, transform) in enumerate(zip(images, transforms)):
        # WARP_INVERSE_MAP: the matrix maps output pixels to input pixels, as the transforms do.
        # OpenCV rounds each sample position to 1/32 pixel.
        warped[index] = cv2.warpAffine(frame, transform[:6].reshape(2, 3), (width, height),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE)
    return warped


def random_affine(images: tf.Tensor, config: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Warp each frame of a (batch, height, width, 3) uint8 or float32 batch by its own random affine transform."""
    shape = tf.shape(images)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    transforms = _affine_matrices(shape[0], height, width, config, seed)
    warped = tf.numpy_function(_warp_frames, [images, transforms], images.dtype, stateful=False)
    warped.set_shape(images.shape)
    return warped


def same_class_half_merge(images: tf.Tensor, labels: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """Replace one half of some frames with the same half of another frame of the same class.

    Each frame is merged with probability ``probability``, with a partner drawn at random among the
    other frames of its class in the batch; a frame alone in its class is left as it is.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    batch = tf.shape(images)[0]

    # Random partner of the same class: random scores, masked to same-class frames other than itself.
    same_class = tf.equal(labels[:, None], labels[None, :])
    others = tf.logical_and(same_class, tf.logical_not(tf.eye(batch, dtype=tf.bool)))
    scores = tf.random.stateless_uniform((batch, batch), seeds[0])
    partner = tf.argmax(tf.where(others, scores, -1.0), axis=1, output_type=tf.int32)
    has_partner = tf.reduce_any(others, axis=1)
    merge = tf.logical_and(has_partner, tf.random.stateless_uniform((batch,), seeds[1]) < probability)

    # Which half: 0 left, 1 right, 2 top, 3 bottom.
    half = tf.random.stateless_uniform((batch,), seeds[2], 0, 4, dtype=tf.int32)
    merged = tf.numpy_function(_paste_halves, [images, partner, merge, half], images.dtype, stateful=False)
    merged.set_shape(images.shape)
    return merged


def _paste_halves(images: np.ndarray, partner: np.ndarray, merge: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Copy ``images`` with half ``half[i]`` of each frame ``i`` where ``merge[i]`` taken from frame ``partner[i]``."""
    height, width = images.shape[1:3]
    regions = {0: np.s_[:, :width // 2], 1: np.s_[:, width // 2:], 2: np.s_[:height // 2, :], 3: np.s_[height // 2:, :]}
    merged = images.copy()
    for index in np.flatnonzero(merge):
        region = regions[int(half[index])]
        merged[index][region] = images[partner[index]][region]
    return merged


def make_batch_augmenter(config: AugmentConfig):
    """Return a batched ``(images, labels, seed) -> (images, labels)`` function for ``image_dataset``.

    ``seed`` is a shape-(2,) integer tensor that ``image_dataset`` draws per batch from a seeded random
    stream, so every batch and epoch gets new transforms while the whole sequence is reproducible.
    """

    def augment(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if config.half_merge_probability > 0:
            images = same_class_half_merge(images, labels, config.half_merge_probability, seeds[0])
        images = random_affine(images, config, seeds[1])
        return images, labels

    return augment


def augmentation_grid(paths: list[str], labels: list[int], size: tuple[int, int], config: AugmentConfig,
                      seed: int = 0) -> np.ndarray:
    """Return a uint8 RGB picture: the frames on the top row, the same frames augmented below.

    Shows what the model sees in training. All frames form one batch, so the half merge can pair
    frames of the same class among them.
    """
    from kaggle_sf.data.images import image_dataset

    augment = make_batch_augmenter(config)
    plain = next(iter(image_dataset(paths, size, len(paths), labels=labels)))[0]
    augmented, _ = augment(plain, tf.constant(labels, dtype=tf.int32), tf.constant([seed, 1], dtype=tf.int64))
    rows = [np.concatenate(list(batch.numpy()), axis=1) for batch in (plain, augmented)]
    return np.clip(np.concatenate(rows, axis=0), 0, 255).astype(np.uint8)
