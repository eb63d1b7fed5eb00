"""The whole classifier that fine-tuning trains: preprocessing, ImageNet backbone, pooling, head.

Topology (layer names are a contract for class-activation maps and for loading saved models):

    image -> preprocessing (ImageNetPreprocessing) -> <backbone name> (nested model, last feature maps)
          -> pool (GlobalAveragePooling2D) -> dropout -> predictions (Dense softmax, 10 classes)

The head's ``predictions`` layer has the same shape as the feature-cache head's, so a head trained on
cached features can initialise it.
"""

from __future__ import annotations

from pathlib import Path

import keras

from kaggle_sf.config import CLASSES, BackboneConfig
from kaggle_sf.models.backbones import build_backbone


def build_classifier(backbone: BackboneConfig, dropout: float = 0.5, weight_decay: float = 0.0,
                     freeze_batch_norm: bool = True) -> keras.Model:
    """Build the trainable classifier for one backbone, with its pretrained weights loaded.

    Args:
        freeze_batch_norm: keep pretrained BatchNormalization layers in inference mode (see
            ``set_backbone_trainable``).
    """
    features = build_backbone(backbone, pooling=None)
    preprocessing = features.get_layer("preprocessing")
    network = features.get_layer(backbone.name)

    inputs = keras.Input(shape=(*backbone.input_size, 3), name="image")
    maps = network(preprocessing(inputs), training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
    dropped = keras.layers.Dropout(dropout, name="dropout")(pooled)
    outputs = keras.layers.Dense(
        len(CLASSES), activation="softmax", name="predictions", dtype="float32",
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay > 0 else None,
    )(dropped)
    model = keras.Model(inputs, outputs, name=f"{backbone.label}_classifier")
    set_backbone_trainable(model, backbone, True, freeze_batch_norm)
    return model


def set_backbone_trainable(model: keras.Model, backbone: BackboneConfig, trainable: bool,
                           freeze_batch_norm: bool = True) -> None:
    """Let the backbone's layers train (or freeze them); pretrained BatchNormalization layers stay frozen.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its moving statistics stay
    the pretrained ones while the convolutions fine-tune; statistics of small fine-tuning batches would
    otherwise overwrite them and wreck the pretrained features. Passing ``training=False`` to the nested
    backbone is not enough: Keras 3 still updates the statistics when the outer model trains. A backbone
    with random weights (``weights: none``) has no statistics worth keeping, and frozen random
    statistics saturate its activations, so its BatchNormalization layers train.

    ``freeze_batch_norm=False`` lets them train anyway. MobileNet v1 needs it: its ImageNet weights have
    channels with a moving variance near zero, which an inference-mode BatchNormalization scales by up
    to 48 (width 0.25), and on State Farm frames fine-tuning with frozen statistics drove most pooled
    features to zero within an epoch at learning rates from 3e-5 to 5e-4, where training statistics
    fitted.
    Recompile the model after calling this.
    """
    network = model.get_layer(backbone.name)
    network.trainable = trainable
    if backbone.weights.lower() == "none" or not freeze_batch_norm:
        return
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def load_classifier(path: str | Path) -> keras.Model:
    """Load a saved classifier (``model.keras`` or a checkpoint), optimizer state included.

    Importing this module registers ``ImageNetPreprocessing``, the one custom layer a saved model holds,
    so no ``custom_objects`` are needed.
    """
    return keras.models.load_model(path)
