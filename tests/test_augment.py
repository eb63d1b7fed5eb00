import numpy as np
import pytest
import tensorflow as tf

from kaggle_sf.data.augment import (
    AugmentConfig,
    _affine_matrices,
    make_batch_augmenter,
    random_affine,
    same_class_half_merge,
)

SEED = tf.constant([3, 4], dtype=tf.int64)


def _batch(n: int = 8, height: int = 32, width: int = 48) -> tf.Tensor:
    # Each frame is a constant colour equal to its index, so every pixel tells where it came from.
    return tf.constant(np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, height, width, 3),
                                                                                     dtype=np.float32))


def test_affine_with_zero_ranges_is_identity():
    images = tf.random.uniform((4, 32, 48, 3), 0, 255, seed=1)
    still = AugmentConfig(rotation_degrees=0, shift_fraction=0, shear_fraction=0, zoom_fraction=0)
    assert np.allclose(random_affine(images, still, SEED).numpy(), images.numpy(), atol=1e-3)


def test_affine_changes_frames_but_keeps_shape_and_range():
    images = tf.random.uniform((4, 32, 48, 3), 0, 255, seed=1)
    warped = random_affine(images, AugmentConfig(), SEED).numpy()
    assert warped.shape == (4, 32, 48, 3)
    assert not np.allclose(warped, images.numpy())
    assert warped.min() >= 0 and warped.max() <= 255


def test_affine_never_mirrors_a_frame():
    # A left-to-right ramp must stay increasing from left to right after any allowed warp.
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.float32)[None, None, :, None], (16, 32, 1, 3))
    warped = random_affine(tf.constant(ramp), AugmentConfig(), SEED).numpy()
    middle_row = warped[:, 16, 8:40, 0]
    assert (np.diff(middle_row, axis=1) >= -1e-3).all()


def test_affine_matches_tensorflow_projective_transform():
    # TensorFlow's own warp of the same transforms, edges repeated, is the reference. A smooth frame keeps
    # the effect of OpenCV's 1/32-pixel sample positions far below one grey level.
    smooth = tf.image.resize(tf.random.uniform((4, 12, 16, 3), 0, 255, seed=3), (96, 128))
    transforms = _affine_matrices(4, 96.0, 128.0, AugmentConfig(), SEED)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=smooth, transforms=transforms, output_shape=(96, 128), fill_value=0.0, interpolation="BILINEAR",
        fill_mode="NEAREST")
    warped = random_affine(smooth, AugmentConfig(), SEED)
    assert np.abs(warped.numpy() - expected.numpy()).max() < 0.1


def test_augmenter_keeps_frame_shape_in_tf_data():
    # The warp and the merge run in NumPy, which TensorFlow cannot see into; the frame shape must survive.
    batches = tf.data.Dataset.from_tensor_slices((_batch(6), tf.constant([0, 0, 1, 1, 2, 2]))).batch(3)
    augment = make_batch_augmenter(AugmentConfig())
    augmented = batches.map(lambda images, labels: augment(images, labels, SEED))
    assert augmented.element_spec[0].shape.as_list() == [None, 32, 48, 3]
    assert [images.shape[0] for images, _ in augmented] == [3, 3]


def test_half_merge_takes_halves_from_same_class_only():
    images = _batch(8)
    labels = tf.constant([0, 0, 1, 1, 2, 2, 2, 3])
    merged = same_class_half_merge(images, labels, probability=1.0, seed=SEED).numpy()
    for i, label in enumerate(labels.numpy()):
        sources = set(np.unique(merged[i]).astype(int))
        same_class = set(np.flatnonzero(labels.numpy() == label))
        assert sources <= same_class
    # Frame 7 is alone in class 3, so it is never merged.
    assert set(np.unique(merged[7])) == {7.0}


def test_half_merge_replaces_exactly_one_half():
    images = _batch(2)
    merged = same_class_half_merge(images, tf.constant([5, 5]), probability=1.0, seed=SEED).numpy()
    for i in range(2):
        share_from_partner = (merged[i, ..., 0] != i).mean()
        assert share_from_partner == pytest.approx(0.5)


def test_half_merge_probability_zero_changes_nothing():
    images = _batch(6)
    merged = same_class_half_merge(images, tf.zeros(6, tf.int32), probability=0.0, seed=SEED)
    assert np.array_equal(merged.numpy(), images.numpy())


def test_augmenter_is_reproducible_for_a_seed():
    augment = make_batch_augmenter(AugmentConfig())
    images = tf.random.uniform((4, 32, 48, 3), 0, 255, seed=2)
    labels = tf.constant([0, 0, 1, 1])
    first, _ = augment(images, labels, SEED)
    second, _ = augment(images, labels, SEED)
    third, _ = augment(images, labels, tf.constant([9, 9], dtype=tf.int64))
    assert np.array_equal(first.numpy(), second.numpy())
    assert not np.array_equal(first.numpy(), third.numpy())
