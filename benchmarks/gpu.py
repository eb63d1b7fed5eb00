"""GPU fine-tuning throughput: ResNet50 at 224x224 with mixed precision on and off.

Run on a machine with a GPU (``python -m benchmarks.run --only gpu``); it is not part of the default
run. The classifier is ``kaggle_sf.models.classifier.build_classifier`` for ResNet50, compiled as
fine-tuning compiles it (Adam, sparse cross-entropy), every layer training and BatchNormalization in
inference mode, as ``configs/seed_gpu.yaml`` fine-tunes it. Weights are random by default, because a
GPU machine without internet access has no ImageNet file, and a step's cost does not depend on the
weights' values. Variants, each running the same number of steps once per round on the same frames:

- ``float32_in_memory`` and ``mixed_in_memory``: ``model.fit`` on frames decoded beforehand and held
  in memory (``benchmarks.common.in_memory_batches``), so the rate is the GPU's, with the ``float32``
  and the ``mixed_float16`` Keras policy;
- ``float32_pipeline`` and ``mixed_pipeline``: the same models fed by ``image_dataset`` with the
  training augmentations, as ``kaggle_sf.finetune`` feeds an epoch. A rate below the in-memory one
  means the CPU's decoding cannot keep up with the GPU.

For reference, the original manual run fine-tuned ResNet50 at about 160 images per second on a V100.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.common import Result, in_memory_batches, interleave, rate_result, sample_train_frames, steps_fitter

logger = logging.getLogger(__name__)

class NoGpuError(RuntimeError):
    """The GPU benchmark was requested on a machine where TensorFlow finds no GPU."""


def _build_model(backbone, policy: str):
    import keras

    from kaggle_sf.models.classifier import build_classifier

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build_classifier(backbone)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    # Inference-mode BatchNormalization, as the GPU recipe trains; build_classifier lets random-weight
    # backbones train theirs.
    for layer in model.get_layer(backbone.name).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    return model


def run_gpu(data_dir: Path, steps: int, rounds: int, *, backbone_name: str = "resnet50",
            size: tuple[int, int] = (224, 224), batch_size: int = 32, weights: str = "none",
            require_gpu: bool = True) -> list[Result]:
    """Measure images per second of fine-tuning steps per precision; see the module docstring.

    Args:
        data_dir: competition files.
        steps: training steps per variant and round; the frames are ``steps * batch_size`` training frames.
        rounds: rounds of each variant.
        backbone_name, size, batch_size, weights: the network, its input size, the batch and its weights.
        require_gpu: raise ``NoGpuError`` when TensorFlow finds no GPU; False runs on the CPU, for a
            test of this code only.
    """
    import tensorflow as tf

    from kaggle_sf.config import BackboneConfig
    from kaggle_sf.data.augment import AugmentConfig, make_batch_augmenter
    from kaggle_sf.data.images import image_dataset, read_images

    gpus = tf.config.list_physical_devices("GPU")
    if require_gpu and not gpus:
        raise NoGpuError("TensorFlow finds no GPU on this machine, so the gpu benchmark has nothing to measure; "
                         "run it where nvidia-smi lists a GPU and TensorFlow was installed with CUDA support")

    backbone = BackboneConfig(name=backbone_name, input_size=size, weights=weights)
    frames = sample_train_frames(data_dir, steps * batch_size)
    paths = frames["path"].tolist()
    labels = frames["classname"].str[1:].astype(int).to_numpy()
    in_memory = in_memory_batches(read_images(paths, size), labels, batch_size)
    augmenter = make_batch_augmenter(AugmentConfig())
    logger.info("GPU fine-tuning of %s: %d rounds of %d steps of %d frames, %d GPU(s)", backbone.label, rounds,
                steps, batch_size, len(gpus))

    # Built once, like the input pipeline benchmark's datasets; each fit starts a new iteration of it.
    pipeline = image_dataset(paths, size, batch_size, labels=labels, shuffle=True, seed=1, augment=augmenter,
                             repeat=True)

    variants = {}
    for precision, policy in (("float32", "float32"), ("mixed", "mixed_float16")):
        model = _build_model(backbone, policy)
        variants[f"{precision}_in_memory"] = steps_fitter(model, in_memory, steps, batch_size)
        variants[f"{precision}_pipeline"] = steps_fitter(model, pipeline, steps, batch_size)
    timings = interleave(variants, rounds, warm_up=list(variants))

    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    settings = {"backbone": backbone.label, "weights": weights, "batch_size": batch_size, "steps_per_round": steps,
                "trainable": "all layers", "batch_norm": "frozen", "device": device}
    return [
        rate_result("gpu/mixed_in_memory", timings, "mixed_in_memory", "float32_in_memory", settings, "images/s"),
        rate_result("gpu/float32_in_memory", timings, "float32_in_memory", None, settings, "images/s"),
        rate_result("gpu/mixed_pipeline", timings, "mixed_pipeline", "mixed_in_memory", settings, "images/s"),
        rate_result("gpu/float32_pipeline", timings, "float32_pipeline", "float32_in_memory", settings, "images/s"),
    ]
