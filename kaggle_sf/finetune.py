"""Fine-tuning of a whole backbone plus head on one fold, in phases, resumable after every epoch.

Each phase sets which layers train and a fresh Adam learning rate (for example a head warm-up with the
backbone frozen, then everything at 1e-4, then at 1e-5). A phase that trains the same layers as the one
before it resets the Adam state in place instead of compiling again, which would trace the training
step again. After every epoch the validation drivers are scored with Kaggle's log loss. The best
weights of the phase are kept and restored when the phase ends or stops early. The model and optimizer
are checkpointed after every epoch, so a killed training resumes from the last finished epoch.

The training drivers' frames are decoded once into memory (``keep_frames_in_memory``) when they fit in
``train.finetune.frame_cache_gb``. Epochs and folds then copy their batches from there. On two CPU
cores, decoding in every epoch cost fine-tuning 20 to 50 % of its rate (``benchmarks/finetune.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kaggle_sf.atomic import atomic_path, write_text_atomic
from kaggle_sf.config import BackboneConfig, FinetuneConfig
from kaggle_sf.metrics import accuracy, log_loss
from kaggle_sf.train import FoldResult, class_indices, prediction_table

if TYPE_CHECKING:
    from kaggle_sf.data.images import DecodedFrames

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.keras"
"""Checkpoint name of a state saved without one. Newer checkpoints are named by phase and epoch."""
STATE = "state.json"
BEST_WEIGHTS = "best.weights.h5"
FINAL_MODEL = "model.keras"


@dataclass
class TrainingState:
    """Where a fold's training stands: the next phase and epoch to run, and what was measured so far."""

    phase: int = 0
    epoch: int = 0
    best_val_log_loss: float = math.inf
    epochs_without_improvement: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: str = CHECKPOINT
    """File name, in the fold's folder, of the model checkpoint that goes with this state."""

    def save(self, folder: Path) -> None:
        write_text_atomic(folder / STATE, json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> TrainingState | None:
        """Return the saved state when it and its checkpoint exist, deleting checkpoints that belong to no state."""
        path = folder / STATE
        if not path.is_file():
            return None
        state = cls(**json.loads(path.read_text()))
        for stray in folder.glob("checkpoint*.keras"):
            if stray.name != state.checkpoint:
                stray.unlink()
        return state if (folder / state.checkpoint).is_file() else None

    def save_with_checkpoint(self, model, folder: Path) -> None:
        """Save ``model`` as a new checkpoint, then this state naming it, then delete the previous checkpoint.

        A process killed between any two of these writes leaves ``state.json`` and the checkpoint it
        names, which belong to the same epoch. With one checkpoint file overwritten in place, a kill
        between the two writes would leave an epoch's weights with the state from before that epoch,
        and the resumed fold would train the epoch twice.
        """
        previous = self.checkpoint
        self.checkpoint = f"checkpoint-{self.phase}-{self.epoch}.keras"
        with atomic_path(folder / self.checkpoint) as temporary:
            model.save(temporary)
        self.save(folder)
        if previous != self.checkpoint:
            (folder / previous).unlink(missing_ok=True)


def _configure_precision(config: FinetuneConfig) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")


def _compile(model, learning_rate: float, config: FinetuneConfig) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=config.xla)


def _restart_optimizer(model, learning_rate: float) -> bool:
    """Zero the Adam optimizer's step count and moments and set its learning rate, as a new Adam starts.

    Unlike ``compile``, this keeps the traced training step, which took about 8 s to trace again on a
    2-core CPU for MobileNet-0.25. Returns False, changing nothing, for any optimizer but a plain Adam,
    e.g. the loss-scale optimizer of mixed precision, whose scale must not be zeroed.
    """
    import keras

    optimizer = model.optimizer
    if type(optimizer) is not keras.optimizers.Adam:
        return False
    for variable in optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))
    optimizer.learning_rate = learning_rate
    return True


FINETUNE_TRAINER_VERSION = 2
"""Changes whenever the same settings would train different fold models, so older ones are not reused."""


def _seed_random_layers(model, seed: int) -> None:
    """Set the state of every random layer of ``model`` (dropout) from ``seed``.

    Keras advances a dropout layer's seed state at every step and does not save it with the model, so
    a fold resumed from its checkpoint would replay the first epoch's dropout masks. Seeding them at
    the start of every epoch makes an epoch's masks depend on its seed alone, and a resumed fold
    trains exactly as one that was never stopped.
    """
    generators = [variable for variable in model.variables if variable.name == "seed_generator_state"]
    for index, state in enumerate(generators):
        # Each layer gets its own seed, below 2**31 - 2 because Keras' TensorFlow backend reduces both
        # elements of the state modulo that number. The second element counts steps from 0.
        layer_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) % (2**31 - 2)
        state.assign(np.array([layer_seed, 0], dtype=state.dtype))


def keep_frames_in_memory(frames: pd.DataFrame, backbone: BackboneConfig,
                          config: FinetuneConfig) -> DecodedFrames | None:
    """Decode the ``path`` column of ``frames`` at the backbone's input size into memory.

    ``frames`` must include the validation frames too, as ``finetune_fold`` predicts them every epoch.

    Returns None, and training decodes from the files every epoch, when the frames would take more
    than ``config.frame_cache_gb``.
    """
    from kaggle_sf.data.images import DecodedFrames

    height, width = backbone.input_size
    needed_gb = len(frames) * height * width * 3 / 1e9
    if needed_gb > config.frame_cache_gb:
        logger.info("%d training frames at %dx%d would take %.2f GB, more than train.finetune.frame_cache_gb "
                    "(%g): decoding them from the files every epoch", len(frames), height, width, needed_gb,
                    config.frame_cache_gb)
        return None
    started = time.monotonic()
    decoded = DecodedFrames(frames["path"].tolist(), backbone.input_size)
    logger.info("Decoded %d training frames at %dx%d into memory (%.2f GB) in %.1f s; epochs and folds reuse them",
                len(frames), height, width, decoded.nbytes / 1e9, time.monotonic() - started)
    return decoded


def predict_images(model, table: pd.DataFrame, size: tuple[int, int], batch_size: int,
                   decoded: DecodedFrames | None = None) -> pd.DataFrame:
    """Predict class probabilities for the frames of ``table`` (``img, path``), ids carried per batch.

    ``decoded`` contains the frames already decoded, as from ``keep_frames_in_memory``; None decodes the files.
    """
    from kaggle_sf.data.images import decode_errors_named, image_dataset

    dataset = image_dataset(table["path"], size, batch_size, ids=table["img"], decoded=decoded)
    ids: list[str] = []
    probabilities = []
    with decode_errors_named():
        for images, batch_ids in dataset:
            probabilities.append(np.asarray(model.predict_on_batch(images), dtype=np.float64))
            ids.extend(i.decode() for i in batch_ids.numpy())
    return prediction_table(ids, np.concatenate(probabilities))


def _epoch_dataset(train: pd.DataFrame, backbone: BackboneConfig, config: FinetuneConfig, seed: int,
                   decoded: DecodedFrames | None):
    """Return one epoch's shuffled, augmented training batches and the number of steps to take."""
    from kaggle_sf.data.augment import AugmentConfig, make_batch_augmenter
    from kaggle_sf.data.images import image_dataset

    augment = None
    if config.augment:
        augment = make_batch_augmenter(AugmentConfig(half_merge_probability=config.half_merge_probability))
    n_images = len(train) if config.max_images_per_epoch == 0 else min(len(train), config.max_images_per_epoch)
    steps = math.ceil(n_images / config.batch_size)
    dataset = image_dataset(train["path"], backbone.input_size, config.batch_size,
                            labels=class_indices(train["classname"]), shuffle=True, seed=seed, augment=augment,
                            decoded=decoded)
    return dataset.take(steps), steps


def finetune_fold(backbone: BackboneConfig, fold: int, train: pd.DataFrame, validation: pd.DataFrame,
                  test: pd.DataFrame, config: FinetuneConfig, seed: int, folder: Path,
                  learning_rates: list[float] | None = None, callbacks: list | None = None,
                  decoded: DecodedFrames | None = None) -> FoldResult:
    """Fine-tune ``backbone`` on one fold's training drivers and predict its validation drivers and the test set.

    Args:
        backbone: the network and its pretrained weights.
        fold: fold number, for the logs and the result.
        train, validation: frames with columns ``img, path, classname``.
        test: test frames, ``img, path``.
        config: phases, batch size, augmentation, precision.
        seed: seed of weight initialisation, shuffling and augmentation.
        folder: this fold model's folder; checkpoints live there and ``model.keras`` is written at the end.
        learning_rates: per-phase learning rates that replace the configured ones (e.g. from a search).
        callbacks: extra Keras callbacks passed to every epoch's ``fit`` (e.g. a pruning callback).
        decoded: the training and validation frames decoded beforehand (``keep_frames_in_memory``);
            None decodes them from the files every epoch. The result is the same either way.

    Returns:
        The fold's out-of-fold and test predictions, per-epoch history and summary metrics.
    """
    import keras

    from kaggle_sf.data.images import decode_errors_named
    from kaggle_sf.models.classifier import build_classifier, load_classifier, set_backbone_trainable

    if decoded is not None:
        # Fails now, naming a missing frame, rather than after the first epoch's training.
        decoded.rows([*train["path"], *validation["path"]])
    folder.mkdir(parents=True, exist_ok=True)
    phases = config.phases
    rates = learning_rates or [phase.learning_rate for phase in phases]
    _configure_precision(config)
    keras.utils.set_random_seed(seed)
    validation_y = class_indices(validation["classname"])

    state = TrainingState.load(folder)
    if state is not None:
        if state.phase < len(phases) and state.epoch >= phases[state.phase].epochs:
            logger.info("Resuming %s fold %d at the end of phase %d from %s", backbone.label, fold,
                        state.phase + 1, folder / state.checkpoint)
        else:
            logger.info("Resuming %s fold %d at phase %d, epoch %d from %s", backbone.label, fold,
                        state.phase + 1, state.epoch + 1, folder / state.checkpoint)
        model = load_classifier(folder / state.checkpoint)
    else:
        state = TrainingState()
        model = build_classifier(backbone, dropout=config.dropout,
                                 freeze_batch_norm=config.batch_norm == "frozen")
    # Which layers the training step traced in this process trains: True for all, False for the head.
    traced_for: bool | None = None

    for phase_index in range(state.phase, len(phases)):
        phase = phases[phase_index]
        if state.epoch == 0:
            # A phase starts with its own layers to train and a fresh optimizer.
            set_backbone_trainable(model, backbone, phase.train_backbone, config.batch_norm == "frozen")
            same_layers = traced_for == phase.train_backbone
            if not (same_layers and _restart_optimizer(model, rates[phase_index])):
                _compile(model, rates[phase_index], config)
            traced_for = phase.train_backbone
            state.best_val_log_loss = math.inf
            state.epochs_without_improvement = 0
        logger.info("%s fold %d phase %d/%d: %s at learning rate %.2g for up to %d epochs", backbone.label, fold,
                    phase_index + 1, len(phases), "all layers" if phase.train_backbone else "head only",
                    rates[phase_index], phase.epochs)

        for epoch in range(state.epoch, phase.epochs):
            epoch_seed = seed * 1000 + phase_index * 100 + epoch
            dataset, steps = _epoch_dataset(train, backbone, config, epoch_seed, decoded)
            _seed_random_layers(model, epoch_seed)
            started = time.monotonic()
            with decode_errors_named():
                fitted = model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
                                   callbacks=callbacks)
            seconds = time.monotonic() - started
            predictions = predict_images(model, validation, backbone.input_size, config.batch_size, decoded)
            probabilities = predictions.set_index("img").reindex(validation["img"]).to_numpy()
            val_loss = log_loss(validation_y, probabilities)

            record = {"loss": fitted.history["loss"][-1], "accuracy": fitted.history["accuracy"][-1],
                      "val_log_loss": val_loss, "val_accuracy": accuracy(validation_y, probabilities),
                      "images_per_second": min(steps * config.batch_size, len(train)) / seconds,
                      "phase": float(phase_index + 1)}
            for name, value in record.items():
                state.history.setdefault(name, []).append(float(value))
            logger.info("%s fold %d phase %d epoch %d: loss %.4f, val log loss %.4f, %.1f images/s",
                        backbone.label, fold, phase_index + 1, epoch + 1, record["loss"], val_loss,
                        record["images_per_second"])

            if val_loss < state.best_val_log_loss:
                state.best_val_log_loss = val_loss
                state.epochs_without_improvement = 0
                # NOTE: a kill after this write and before the state's retrains the epoch and writes it
                # again, which gives the same weights only where training is deterministic (CPU).
                with atomic_path(folder / BEST_WEIGHTS) as temporary:
                    model.save_weights(temporary)
            else:
                state.epochs_without_improvement += 1
            state.epoch = epoch + 1
            stop = state.epochs_without_improvement >= config.patience
            if stop:
                state.epoch = phase.epochs
            state.save_with_checkpoint(model, folder)
            if stop:
                logger.info("Early stop: no improvement for %d epochs", config.patience)
                break

        # Restore the best epoch of the phase before the next phase starts from it.
        model.load_weights(folder / BEST_WEIGHTS)
        state.phase, state.epoch = phase_index + 1, 0
        state.save_with_checkpoint(model, folder)

    with atomic_path(folder / FINAL_MODEL) as temporary:
        model.save(temporary)
    validation_predictions = predict_images(model, validation, backbone.input_size, config.batch_size, decoded)
    test_predictions = predict_images(model, test, backbone.input_size, config.batch_size)
    probabilities = validation_predictions.set_index("img").reindex(validation["img"]).to_numpy()
    speeds = state.history.get("images_per_second", [0.0])
    metrics = {
        "val_log_loss": log_loss(validation_y, probabilities),
        "val_accuracy": accuracy(validation_y, probabilities),
        "epochs": float(len(state.history.get("loss", []))),
        "train_images_per_second": float(np.median(speeds)),
    }
    logger.info("%s fold %d: val log loss %.4f, accuracy %.3f after %d epochs", backbone.label, fold,
                metrics["val_log_loss"], metrics["val_accuracy"], metrics["epochs"])
    return FoldResult(fold=fold, oof=validation_predictions, test=test_predictions, history=state.history,
                      metrics=metrics)
