"""Fine-tuning search: short trials over the learning rate of the phases that train the backbone.

Too high a rate wrecks the pretrained weights within a few hundred steps and too low a rate barely moves
them, so a short run already separates the two. A trial builds the classifier
(``kaggle_sf.models.classifier.build_classifier``) with the pretrained backbone, trains every layer for
``search.finetune.steps`` steps on frames of the first fold's training drivers, and scores the frames of
that fold's validation drivers with Kaggle's log loss ``search.finetune.evaluations`` times. Optuna's
``KerasPruningCallback`` reports each score and stops a trial that falls behind.

Some work is done once per search, not per trial. The sampled frames are decoded into memory. When the
configured phases begin with a head-only warm-up, a head is trained on cached bottleneck features and
copied into every trial's classifier, in place of the warm-up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import optuna
import pandas as pd

from kaggle_sf.config import BackboneConfig, ConfigError, FinetuneConfig, FinetuneSearchConfig, HeadConfig
from kaggle_sf.data.images import read_images, without_autotuning
from kaggle_sf.metrics import log_loss
from kaggle_sf.search.head_training import fit_head
from kaggle_sf.train import class_indices

logger = logging.getLogger(__name__)

OBJECTIVE = "val_log_loss"


@dataclass(frozen=True)
class TrialFrames:
    """Frames decoded once for every trial of a fine-tuning search."""

    train_images: np.ndarray
    """uint8 frames of shape (n, height, width, 3)."""
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def sample_frames(frames: pd.DataFrame, n_frames: int, seed: int) -> pd.DataFrame:
    """Return up to ``n_frames`` rows spread evenly over drivers and classes (``subject``, ``classname``)."""
    if len(frames) <= n_frames:
        return frames
    shuffled = frames.sample(frac=1.0, random_state=seed)
    # Take the first frame of every driver x class, then the second of each, and so on.
    rank = shuffled.groupby(["subject", "classname"]).cumcount()
    return shuffled.assign(rank=rank.to_numpy()).sort_values("rank", kind="stable").head(n_frames).drop(
        columns="rank")


def load_trial_frames(train: pd.DataFrame, validation: pd.DataFrame, backbone: BackboneConfig,
                      search: FinetuneSearchConfig, seed: int) -> TrialFrames:
    """Sample and decode the training and validation frames of the trials (``img, path, subject, classname``)."""
    train = sample_frames(train, search.n_train_images, seed)
    validation = sample_frames(validation, search.n_val_images, seed)
    logger.info("Decoding %d training and %d validation frames for the fine-tuning search", len(train),
                len(validation))
    return TrialFrames(
        train_images=read_images(train["path"].tolist(), backbone.input_size),
        train_labels=class_indices(train["classname"]),
        val_images=read_images(validation["path"].tolist(), backbone.input_size),
        val_labels=class_indices(validation["classname"]),
    )


# --- Learning rates of the phases ----------------------------------------------------------------


def first_backbone_phase(finetune: FinetuneConfig) -> int:
    """Return the index of the first phase that trains the backbone.

    Raises:
        ConfigError: no phase trains the backbone, so there is no rate to search.
    """
    for index, phase in enumerate(finetune.phases):
        if phase.train_backbone:
            return index
    raise ConfigError("config key 'train.finetune.phases': no phase with train_backbone: true, so the fine-tuning "
                     "search has no learning rate to tune; add such a phase or set search.enabled to false")


def finetune_from_rate(finetune: FinetuneConfig, learning_rate: float) -> FinetuneConfig:
    """Return ``finetune`` with the first backbone phase at ``learning_rate`` and later backbone phases scaled.

    Later phases that train the backbone keep their configured ratio to the first one, so 1e-4 then 1e-5
    with a found rate of 3e-4 becomes 3e-4 then 3e-5. Head-only phases keep their rates.
    """
    first = first_backbone_phase(finetune)
    scale = learning_rate / finetune.phases[first].learning_rate
    phases = tuple(
        replace(phase, learning_rate=phase.learning_rate * scale) if index >= first and phase.train_backbone
        else phase
        for index, phase in enumerate(finetune.phases))
    return replace(finetune, phases=phases)


# --- Trials --------------------------------------------------------------------------------------


def warm_head_weights(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                      finetune: FinetuneConfig, base: HeadConfig, seed: int) -> list[np.ndarray]:
    """Train the classifier's head on cached features, standing in for the head-only warm-up phases."""
    head = replace(base, dropout=finetune.dropout, weight_decay=0.0)
    fitted = fit_head(train_x, train_y, val_x, val_y, head, seed)
    logger.info("Warm head for the fine-tuning trials: validation log loss %.4f after %d epochs",
                log_loss(val_y, fitted.probabilities), fitted.best_epoch)
    return fitted.weights


def _validation_callback(frames: TrialFrames, batch_size: int):
    import keras

    class ValidationLogLoss(keras.callbacks.Callback):
        """Add Kaggle's log loss on the validation frames to the epoch logs as ``val_log_loss``."""

        def __init__(self) -> None:
            super().__init__()
            self.values: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probabilities = np.concatenate([
                np.asarray(self.model(frames.val_images[start:start + batch_size].astype(np.float32),
                                      training=False), dtype=np.float64)
                for start in range(0, len(frames.val_images), batch_size)])
            value = log_loss(frames.val_labels, probabilities)
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"loss diverged by evaluation {epoch + 1}")
            self.values.append(value)
            if logs is not None:
                logs[OBJECTIVE] = value

    return ValidationLogLoss()


def make_finetune_objective(backbone: BackboneConfig, finetune: FinetuneConfig, search: FinetuneSearchConfig,
                            frames: TrialFrames, head_weights: list[np.ndarray] | None,
                            seed: int) -> Callable[[optuna.Trial], float]:
    """Return an objective that scores a backbone learning rate by a short fine-tuning run.

    Args:
        backbone: the network and its pretrained weights.
        finetune: batch size, dropout, BatchNormalization mode, precision and XLA of the fine-tuning
            whose rate is searched.
        search: rate range, steps and evaluations per trial.
        frames: decoded training and validation frames.
        head_weights: weights of the ``predictions`` layer to start from; None starts from random ones.
        seed: seed of initialisation and shuffling, the same for every trial.

    Returns:
        An objective whose value is the lowest validation log loss of the trial's evaluations, as
        fine-tuning keeps the best epoch of a phase.
    """
    steps_per_evaluation = search.steps // search.evaluations

    def objective(trial: optuna.Trial) -> float:
        import keras
        import tensorflow as tf
        from optuna_integration.keras import KerasPruningCallback

        from kaggle_sf.models.classifier import build_classifier

        learning_rate = trial.suggest_float("learning_rate", *search.learning_rate, log=True)
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("mixed_float16" if finetune.mixed_precision else "float32")
        keras.utils.set_random_seed(seed)
        model = build_classifier(backbone, dropout=finetune.dropout,
                                 freeze_batch_norm=finetune.batch_norm == "frozen")
        if head_weights is not None:
            model.get_layer("predictions").set_weights(head_weights)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      jit_compile=finetune.xla)

        batches = (tf.data.Dataset.from_tensor_slices((frames.train_images, frames.train_labels))
                   .shuffle(len(frames.train_images), seed=seed).repeat().batch(finetune.batch_size)
                   .map(lambda images, labels: (tf.cast(images, tf.float32), labels))
                   .prefetch(tf.data.AUTOTUNE))
        batches = without_autotuning(batches)
        validation = _validation_callback(frames, finetune.batch_size)
        model.fit(batches, epochs=search.evaluations, steps_per_epoch=steps_per_evaluation, shuffle=False, verbose=0,
                  callbacks=[validation, KerasPruningCallback(trial, OBJECTIVE)])
        return min(validation.values)

    return objective
