"""Classification heads: dropout followed by a dense softmax layer over the ten classes."""

from __future__ import annotations

import keras

from kaggle_sf.config import CLASSES


def build_head(n_features: int, dropout: float, weight_decay: float, name: str = "head") -> keras.Model:
    """Build a head that maps pooled bottleneck features to class probabilities.

    Args:
        n_features: length of the feature vector.
        dropout: fraction of features dropped during training.
        weight_decay: L2 penalty on the dense kernel.
    """
    inputs = keras.Input(shape=(n_features,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(inputs)
    outputs = keras.layers.Dense(
        len(CLASSES), activation="softmax", name="predictions",
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay > 0 else None,
    )(x)
    return keras.Model(inputs, outputs, name=name)
