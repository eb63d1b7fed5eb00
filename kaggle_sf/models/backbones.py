"""Backbone registry: each ImageNet network with its constructor, input size, preprocessing and weights.

Models built here take raw RGB frames in [0, 255]. The ImageNet preprocessing runs inside the model in
a registered ``ImageNetPreprocessing`` layer, so a saved model reloads in a fresh process and predicts
the same values without any custom code passed to the loader.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import keras

from kaggle_sf.config import BackboneConfig

logger = logging.getLogger(__name__)

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


class WeightsError(RuntimeError):
    """ImageNet weights are neither in Keras' cache nor downloadable."""


@keras.saving.register_keras_serializable(package="kaggle_sf")
class ImageNetPreprocessing(keras.layers.Layer):
    """Scale RGB frames in [0, 255] the way the backbone was trained on ImageNet.

    Modes follow ``keras.applications.imagenet_utils``: ``tf`` scales to [-1, 1]; ``caffe`` flips RGB to
    BGR and subtracts the ImageNet channel means; ``torch`` scales to [0, 1] and standardises per channel.
    """

    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
    TORCH_MEAN = (0.485, 0.456, 0.406)
    TORCH_STD = (0.229, 0.224, 0.225)

    def __init__(self, mode: str = "tf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "torch"):
            raise ValueError(f"unknown preprocessing mode {mode!r}; expected tf, caffe or torch")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        inputs = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return inputs / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(inputs, axis=-1)
            return bgr - ops.convert_to_tensor(self.CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        scaled = inputs / 255.0
        mean = ops.convert_to_tensor(self.TORCH_MEAN, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.TORCH_STD, dtype=self.compute_dtype)
        return (scaled - mean) / std

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@dataclass(frozen=True)
class BackboneSpec:
    """What the toolkit needs to know about one ImageNet backbone."""

    name: str
    constructor: str
    """Attribute of ``keras.applications`` that builds the network."""
    default_input_size: tuple[int, int]
    preprocessing: str
    last_conv_layer: str
    """Name of the last convolutional activation, used for class-activation maps."""
    weights_file: str
    """File name of the no-top ImageNet weights in Keras' cache (MobileNet's depends on width and size)."""
    weights_url_folder: str


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet": BackboneSpec(
        "mobilenet", "MobileNet", (224, 224), "tf", "conv_pw_13_relu",
        "mobilenet_{alpha}_{rows}_tf_no_top.h5", "mobilenet_v1/"),
    "resnet50": BackboneSpec(
        "resnet50", "ResNet50", (224, 224), "caffe", "conv5_block3_out",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet/"),
    "xception": BackboneSpec(
        "xception", "Xception", (299, 299), "tf", "block14_sepconv2_act",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "xception/"),
    "inception_v3": BackboneSpec(
        "inception_v3", "InceptionV3", (299, 299), "tf", "mixed10",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_v3/"),
    "inception_resnet_v2": BackboneSpec(
        "inception_resnet_v2", "InceptionResNetV2", (299, 299), "tf", "conv_7b_ac",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_resnet_v2/"),
}


def get_spec(name: str) -> BackboneSpec:
    """Return the registry entry for ``name``, raising ValueError naming the known backbones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --- ImageNet weights ----------------------------------------------------------------------------


def keras_cache_dir() -> Path:
    """Return the folder where Keras caches downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def imagenet_weights_file(config: BackboneConfig) -> str:
    """Return the file name Keras uses for this backbone's no-top ImageNet weights."""
    spec = get_spec(config.name)
    if config.name != "mobilenet":
        return spec.weights_file
    # MobileNet has one file per width and square input size; other sizes use the 224 file, whose
    # convolution weights fit any input size.
    height, width = config.input_size
    rows = height if height == width and height in (128, 160, 192, 224) else 224
    alpha = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}.get(config.alpha)
    if alpha is None:
        raise WeightsError(f"MobileNet ImageNet weights exist for alpha 0.25, 0.5, 0.75 and 1.0 only, got "
                           f"{config.alpha}; change backbones.alpha or set backbones.weights to none")
    return spec.weights_file.format(alpha=alpha, rows=rows)


def resolve_weights(config: BackboneConfig) -> Path | None:
    """Find (or download) the weights file a backbone config asks for.

    Returns:
        The ``.h5`` file to load, or None for random initialisation (``weights: none``).

    Raises:
        WeightsError: the file is absent and cannot be downloaded; the message names the file and folder.
    """
    if config.weights.lower() == "none":
        return None
    if config.weights != "imagenet":
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} (backbones.weights for {config.name}) not found; "
                               "give an existing .h5 file, 'imagenet' or 'none'")
        return path

    file_name = imagenet_weights_file(config)
    cached = keras_cache_dir() / file_name
    if cached.is_file():
        return cached
    url = KERAS_WEIGHTS_URL + get_spec(config.name).weights_url_folder + file_name
    logger.info("Downloading ImageNet weights %s", url)
    try:
        return Path(keras.utils.get_file(file_name, url, cache_subdir="models"))
    except Exception as error:  # get_file raises plain Exception for network failures
        raise WeightsError(
            f"ImageNet weights for {config.name} are not cached and could not be downloaded ({error}). "
            f"Place {file_name} in {cached.parent} (set KERAS_HOME to use another cache), "
            "or set backbones.weights to an .h5 path or to none") from error


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(config: BackboneConfig) -> str:
    """Return the SHA-256 of the weights file (``none`` for random weights), for cache keys."""
    path = resolve_weights(config)
    if path is None:
        return "none"
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


# --- Building ------------------------------------------------------------------------------------


def build_backbone(config: BackboneConfig, pooling: str | None = "avg") -> keras.Model:
    """Build a backbone that maps raw RGB frames in [0, 255] to features, with its weights loaded.

    Args:
        config: which network, input size and weights.
        pooling: ``avg`` returns global-average-pooled features; None returns the last feature maps.

    Returns:
        A model whose input is (height, width, 3) float frames and whose first layer after the input is
        ``ImageNetPreprocessing``; the ImageNet network is nested as a layer named after the backbone.
    """
    spec = get_spec(config.name)
    weights_path = resolve_weights(config)
    height, width = config.input_size
    shape = (height, width, 3)

    options: dict[str, Any] = {"include_top": False, "weights": None, "input_shape": shape, "pooling": pooling}
    if config.name == "mobilenet":
        options["alpha"] = config.alpha
    network = getattr(keras.applications, spec.constructor)(**options)
    if weights_path is not None:
        network.load_weights(str(weights_path))
    network.name = config.name

    inputs = keras.Input(shape=shape, name="image")
    features = network(ImageNetPreprocessing(spec.preprocessing, name="preprocessing")(inputs))
    return keras.Model(inputs, features, name=f"{config.label}_features")
