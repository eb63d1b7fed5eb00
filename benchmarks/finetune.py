"""Fine-tuning throughput: the training pipeline against the same model fitted on frames in memory.

The classifier is ``kaggle_sf.models.classifier.build_classifier`` for MobileNet (width 0.25, ImageNet
weights) at 192x256, compiled as fine-tuning compiles it (Adam, sparse cross-entropy), every layer
training. Variants, each running the same number of steps of 32 frames once per round on the same
frames:

- ``pipeline_augment``: ``image_dataset`` with labels, shuffling and ``make_batch_augmenter(AugmentConfig())``,
  decoding the files for every batch, as ``kaggle_sf.finetune`` feeds an epoch when the frames exceed
  ``train.finetune.frame_cache_gb``;
- ``pipeline``: the same without augmentation;
- ``decoded_augment`` and ``decoded``: the same two pipelines copying their batches from
  ``DecodedFrames``, decoded once beforehand, as ``kaggle_sf.finetune`` feeds an epoch by default;
- ``in_memory``: the same steps on frames decoded beforehand and held in memory, shuffled and batched
  by tf.data alone (``benchmarks.common.in_memory_batches``), with no augmentation.

The ratios show what decoding and augmenting cost a training step when they share the CPU with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.common import Result, in_memory_batches, interleave, rate_result, sample_train_frames, steps_fitter

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
SIZE = (192, 256)


def run_finetune(data_dir: Path, steps: int, rounds: int) -> list[Result]:
    """Measure images per second of fine-tuning steps; see the module docstring.

    Args:
        data_dir: competition files.
        steps: training steps per variant and round; the frames are ``steps * 32`` training frames.
        rounds: rounds of each variant.
    """
    import keras

    from kaggle_sf.config import BackboneConfig, FinetuneConfig
    from kaggle_sf.data.augment import AugmentConfig, make_batch_augmenter
    from kaggle_sf.data.images import DecodedFrames, image_dataset, read_images
    from kaggle_sf.models.classifier import build_classifier

    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=SIZE, weights="imagenet")
    finetune = FinetuneConfig()
    frames = sample_train_frames(data_dir, steps * BATCH_SIZE)
    paths = frames["path"].tolist()
    labels = frames["classname"].str[1:].astype(int).to_numpy()
    logger.info("Fine-tuning: %d rounds of %d steps of %d frames at %dx%d", rounds, steps, BATCH_SIZE, *SIZE)

    keras.utils.set_random_seed(0)
    model = build_classifier(backbone, dropout=finetune.dropout, freeze_batch_norm=finetune.batch_norm == "frozen")
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    in_memory = in_memory_batches(read_images(paths, SIZE), labels, BATCH_SIZE)
    decoded = DecodedFrames(paths, SIZE)
    augmenter = make_batch_augmenter(AugmentConfig())

    def pipeline_fit(augment: bool, frames: DecodedFrames | None = None):
        # Built once, like the input pipeline benchmark's datasets; each fit starts a new iteration of it.
        dataset = image_dataset(paths, SIZE, BATCH_SIZE, labels=labels, shuffle=True, seed=1,
                                augment=augmenter if augment else None, repeat=True, decoded=frames)
        return steps_fitter(model, dataset, steps, BATCH_SIZE)

    variants = {"pipeline_augment": pipeline_fit(augment=True), "pipeline": pipeline_fit(augment=False),
                "decoded_augment": pipeline_fit(augment=True, frames=decoded),
                "decoded": pipeline_fit(augment=False, frames=decoded),
                "in_memory": steps_fitter(model, in_memory, steps, BATCH_SIZE)}
    timings = interleave(variants, rounds, warm_up=list(variants))
    settings = {"backbone": backbone.label, "weights": "imagenet", "batch_size": BATCH_SIZE, "steps_per_round": steps,
                "trainable": "all layers", "batch_norm": finetune.batch_norm}
    return [
        rate_result("finetune/pipeline_augment", timings, "pipeline_augment", "in_memory", settings, "images/s"),
        rate_result("finetune/pipeline", timings, "pipeline", "in_memory", settings, "images/s"),
        rate_result("finetune/decoded_augment", timings, "decoded_augment", "in_memory", settings, "images/s"),
        rate_result("finetune/decoded", timings, "decoded", "in_memory", settings, "images/s"),
        rate_result("finetune/in_memory", timings, "in_memory", None, settings, "images/s"),
    ]
