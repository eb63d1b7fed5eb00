"""The whole classifier that fine-tuning trains: preprocessing, ImageNet backbone, pooling, head.

Topology (layer names are a contract for class-activation maps and for loading saved models):

    image -> preprocessing (ImageNetPreprocessing) -> <backbone name> (nested model, last feature maps)
          -> pool (GlobalAveragePooling2D) -> dropout -> predictions (Dense softmax, 10 classes)

The head's ``predictions`` layer has the same shape as the feature-cache head's, so a head trained on
cached features can initialise it.
"""

from __future__ import annotations

import keras

from kaggle_sf.config import CLASSES, BackboneConfig
from kaggle_sf.models.backbones import build_backbone


def build_classifier(backbone: BackboneConfig, dropout: float = 0.5, weight_decay: float = 0.0) -> keras.Model:
    """Build the trainable classifier for one backbone, with its pretrained weights loaded."""
    features = build_backbone(backbone, pooling=None)
    preprocessing = features.get_layer("preprocessing")
    network = features.get_layer(backbone.name)

    inputs = keras.Input(shape=(*backbone.input_size, 3), name="image")
    maps = network(preprocessing(inputs))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
    dropped = keras.layers.Dropout(dropout, name="dropout")(pooled)
    outputs = keras.layers.Dense(
        len(CLASSES), activation="softmax", name="predictions", dtype="float32",
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay > 0 else None,
    )(dropped)
    return keras.Model(inputs, outputs, name=f"{backbone.label}_classifier")
