"""Training of one backbone x fold model and the predictions it makes.

Head mode trains a dropout + dense softmax head on cached bottleneck features of the fold's training
drivers, early-stopped on its validation drivers. Every prediction table carries the image ids.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaggle_sf.atomic import atomic_path, write_text_atomic
from kaggle_sf.config import CLASSES, HeadConfig
from kaggle_sf.metrics import accuracy, log_loss

logger = logging.getLogger(__name__)

CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

HEAD_FILE = "head.keras"
"""A head-mode fold model's trained head (features -> probabilities), in a fold model's folder."""


class TrainingError(RuntimeError):
    """Training diverged: its predictions are not finite numbers."""


HEAD_TRAINER_VERSION = 2
"""Part of the head-mode fold models' cache key: changes whenever ``train_head_fold`` trains differently."""


@dataclass
class FoldResult:
    """A trained fold model's predictions.

    Attributes:
        fold: the fold whose drivers were held out.
        oof: out-of-fold predictions on the held-out drivers: ``img, c0..c9``.
        test: predictions on the test set: ``img, c0..c9``.
        history: per-epoch metrics (``loss``, ``val_loss``, ...).
        metrics: summary metrics (``val_log_loss``, ``val_accuracy``, ``epochs``, ...).
        head: the trained Keras head in head mode, saved as ``head.keras``; None when loaded from disk.
    """

    fold: int
    oof: pd.DataFrame
    test: pd.DataFrame
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    head: Any = field(default=None, repr=False, compare=False)

    def save(self, folder: Path) -> None:
        """Write the result into ``folder``; ``metrics.json`` is written last and marks it complete."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in (("oof.csv", self.oof), ("test.csv", self.test)):
            with atomic_path(folder / name) as temporary:
                # Full precision, so a resumed run blends exactly the numbers an uninterrupted one does.
                table.to_csv(temporary, index=False)
        write_text_atomic(folder / "history.json", json.dumps(self.history))
        if self.head is not None:
            with atomic_path(folder / HEAD_FILE) as temporary:
                self.head.save(temporary)
        write_text_atomic(folder / "metrics.json", json.dumps({"fold": self.fold, **self.metrics}))

    @classmethod
    def load(cls, folder: Path) -> FoldResult | None:
        """Load a saved result, or return None when ``folder`` holds no complete one."""
        if not (folder / "metrics.json").is_file():
            return None
        metrics = json.loads((folder / "metrics.json").read_text())
        fold = int(metrics.pop("fold"))
        return cls(
            fold=fold,
            oof=pd.read_csv(folder / "oof.csv", dtype={"img": str}),
            test=pd.read_csv(folder / "test.csv", dtype={"img": str}),
            history=json.loads((folder / "history.json").read_text()),
            metrics=metrics,
        )


def prediction_table(ids: np.ndarray | list[str], probabilities: np.ndarray) -> pd.DataFrame:
    """Return predictions as ``img, c0..c9`` with the ids alongside."""
    table = pd.DataFrame(np.asarray(probabilities, dtype=np.float64), columns=list(CLASSES))
    table.insert(0, "img", [str(i) for i in ids])
    return table


def class_indices(classnames: pd.Series) -> np.ndarray:
    """Map ``c0..c9`` to 0..9."""
    return classnames.map(CLASS_INDEX).to_numpy(dtype=np.int64)


def train_head_fold(fold: int, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                    val_ids: list[str], test_x: np.ndarray, test_ids: list[str], config: HeadConfig,
                    seed: int, callbacks: list | None = None) -> FoldResult:
    """Train a head on one fold's features and predict its validation drivers and the test set.

    Training stops when the validation loss has not improved for ``config.patience`` epochs, and the
    weights of the best epoch are restored before predicting.

    Args:
        fold: fold number, for the result and the logs.
        train_x, train_y: features and class indices of the training drivers.
        val_x, val_y: features and class indices of the held-out drivers.
        val_ids, test_ids: image ids of ``val_x`` and ``test_x`` rows.
        test_x: features of the test images.
        config: head settings.
        seed: seed for weight initialisation, dropout and shuffling.
        callbacks: extra Keras callbacks, e.g. per-epoch metric logging.
    """
    import keras
    import tensorflow as tf

    from kaggle_sf.models.heads import build_head

    keras.utils.set_random_seed(seed)
    head = build_head(train_x.shape[1], config.dropout, config.weight_decay)
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                             restore_best_weights=True)
    # A dataset reshuffled every epoch, because Keras 3.15's fit on arrays, after set_random_seed, repeats
    # its first order in every epoch. With the search's trainer at the searched settings, reshuffling
    # lowered the full-resolution sample's out-of-fold log loss from 1.666 to 1.628 (means of 3 and 6 seeds).
    batches = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
               .shuffle(len(train_x), seed=seed, reshuffle_each_iteration=True)
               .batch(config.batch_size))
    history = head.fit(batches, validation_data=(val_x, val_y), epochs=config.max_epochs, shuffle=False,
                       callbacks=[stopping, *(callbacks or [])], verbose=0)

    # Calling the model directly avoids retracing a predict function for every fold's head.
    val_probabilities = head(val_x, training=False).numpy()
    test_probabilities = head(test_x, training=False).numpy()
    metrics = {
        "val_log_loss": log_loss(val_y, val_probabilities),
        "val_accuracy": accuracy(val_y, val_probabilities),
        "epochs": float(len(history.history["loss"])),
        "best_epoch": float(np.argmin(history.history["val_loss"]) + 1),
    }
    logger.info("Fold %d: val log loss %.4f, accuracy %.3f, best epoch %d of %d", fold, metrics["val_log_loss"],
                metrics["val_accuracy"], metrics["best_epoch"], metrics["epochs"])
    return FoldResult(
        fold=fold,
        oof=prediction_table(val_ids, val_probabilities),
        test=prediction_table(test_ids, test_probabilities),
        history={name: [float(v) for v in values] for name, values in history.history.items()},
        metrics=metrics,
        head=head,
    )
