"""Class-activation maps: where in a frame a classifier finds the evidence for a class.

Both methods weight the channels of the last convolutional feature maps ``A`` (height x width x k):

* CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization") needs a head of
  global average pooling followed by one dense layer. The class score is then the spatial mean of
  ``sum_k w[k, c] * A[..., k]``, so that weighted sum is the class's map. It costs no gradient.
* Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization") works for any head. Each channel is weighted by the spatial mean of the
  gradient of the class score with respect to it. On a pooling + dense head it equals CAM divided by
  the number of map cells, so both give the same normalised heatmap.

The class score is the logit (the dense layer before its softmax) when the classifier ends in a softmax
dense layer, as the toolkit's classifiers do, and the model's output otherwise. Heatmaps keep the
positive evidence (negative values become 0) and are scaled so that each frame's maximum is 1.
Classifiers take raw RGB frames in [0, 255], as the backbones of ``kaggle_sf.models`` do.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

METHODS = ("auto", "cam", "gradcam")
"""``auto`` uses CAM when the head allows it and Grad-CAM otherwise."""


class CamError(ValueError):
    """A classifier cannot be split at the requested layer, or a method does not apply to it."""


# --- Splitting a classifier at its feature maps --------------------------------------------------


def _history(tensor: Any) -> tuple[Any, Any]:
    """Return the operation that produced a symbolic tensor and the node of that call."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def _call_tensors(model: keras.Model, layer: keras.layers.Layer) -> tuple[Any, Any]:
    """Return the input and output tensors of ``layer``'s call inside ``model``'s graph.

    A layer reused by several graphs has one node per call: ``build_classifier`` calls the backbone
    network that ``build_backbone`` already called once. Keras 3 has no public way to ask which node
    belongs to a given model, so this walks back from the model's outputs.
    """
    pending = list(model.outputs)
    seen: set[int] = set()
    while pending:
        operation, node = _history(pending.pop())
        if id(node) in seen:
            continue
        seen.add(id(node))
        if operation is layer:
            if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
                raise CamError(f"layer {layer.name!r} of {model.name} has several inputs or outputs; "
                               "class-activation maps need a layer with one of each")
            return node.input_tensors[0], node.output_tensors[0]
        pending.extend(node.input_tensors)
    raise CamError(f"layer {layer.name!r} is not on the path to {model.name}'s output")


def _submodel(inputs: Any, outputs: Any, what: str) -> keras.Model:
    """Build a model between two tensors of one graph, naming the layer when the graph branches."""
    try:
        return keras.Model(inputs, outputs)
    except ValueError as error:
        raise CamError(f"cannot split the classifier at {what}: some path from the frames to the "
                       f"predictions bypasses it ({error})") from error


def _find_layer(model: keras.Model, layer_name: str) -> tuple[keras.layers.Layer, keras.Model | None]:
    """Find ``layer_name`` at the top of ``model`` or one nesting level down.

    Returns:
        The layer, and the nested model that contains it (None when it sits at the top).
    """
    for layer in model.layers:
        if layer.name == layer_name:
            return layer, None
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(inner.name == layer_name for inner in layer.layers):
            return layer.get_layer(layer_name), layer
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    raise CamError(f"{model.name} has no layer {layer_name!r} at its top level or inside the nested "
                   f"models {nested}; pass the name of its last convolutional layer")


def _pooled_dense_kernel(dense_input: Any, maps: Any, dense: keras.layers.Layer) -> np.ndarray | None:
    """Return the dense kernel when the maps reach it through global average pooling and dropout only."""
    tensor = dense_input
    while True:
        operation, node = _history(tensor)
        if not isinstance(operation, keras.layers.Dropout):
            break
        tensor = node.input_tensors[0]
    if not isinstance(operation, keras.layers.GlobalAveragePooling2D):
        return None
    if operation.data_format != "channels_last" or operation.keepdims:
        return None
    if node.input_tensors[0] is not maps:
        return None
    return keras.ops.convert_to_numpy(dense.kernel).astype(np.float32)


@dataclass
class CamModel:
    """A classifier split at its last convolutional feature maps: frames -> maps -> class scores.

    Attributes:
        features: model from frames (height, width, 3) in [0, 255] to feature maps (h, w, k).
        score: function from feature maps to class scores (logits when ``logits`` is true).
        logits: whether ``score`` returns logits, whose softmax gives the probabilities.
        dense_kernel: the (k, classes) kernel of a pooling + dense head, which allows CAM; None otherwise.
        features_key: models with equal keys compute the same maps, so an ensemble computes them once.
        name: label for logs and errors.
    """

    features: keras.Model
    score: Callable[[Any], Any]
    logits: bool
    dense_kernel: np.ndarray | None
    features_key: Hashable
    name: str

    @property
    def input_size(self) -> tuple[int, int]:
        """Height and width of the frames the model takes."""
        return int(self.features.input_shape[1]), int(self.features.input_shape[2])

    def feature_maps(self, images: np.ndarray) -> tf.Tensor:
        """Return the feature maps of a batch of frames, as float32."""
        return tf.cast(self.features(images, training=False), tf.float32)

    def probabilities(self, maps: tf.Tensor) -> np.ndarray:
        """Return the class probabilities for a batch of feature maps."""
        scores = tf.cast(self.score(maps), tf.float32)
        if self.logits:
            scores = tf.nn.softmax(scores, axis=-1)
        return scores.numpy()

    def heatmaps(self, maps: tf.Tensor, classes: np.ndarray, method: str = "auto") -> np.ndarray:
        """Return one heatmap in [0, 1] per frame on the feature-map grid, for the class given per frame.

        Raises:
            CamError: ``method`` is ``cam`` but the head is not global average pooling + dense.
        """
        if method not in METHODS:
            raise CamError(f"unknown class-activation method {method!r}; choose one of {', '.join(METHODS)}")
        classes = np.asarray(classes, dtype=np.int64)
        if method == "cam" and self.dense_kernel is None:
            raise CamError(f"CAM needs global average pooling followed by one dense layer after the maps, "
                           f"which {self.name} lacks; use Grad-CAM (method 'gradcam' or 'auto')")
        if method != "gradcam" and self.dense_kernel is not None:
            raw = np.einsum("nhwk,kn->nhw", maps.numpy(), self.dense_kernel[:, classes])
        else:
            raw = self._gradcam(maps, classes)
        return normalise_heatmaps(raw)

    def _gradcam(self, maps: tf.Tensor, classes: np.ndarray) -> np.ndarray:
        with tf.GradientTape() as tape:
            tape.watch(maps)
            scores = tf.cast(self.score(maps), tf.float32)
            chosen = tf.gather(scores, classes[:, None], axis=1, batch_dims=1)
        # In inference mode the frames of a batch do not interact, so the gradient of the summed
        # scores is each frame's own gradient.
        gradients = tape.gradient(chosen, maps)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        return tf.einsum("nhwk,nk->nhw", maps, channel_weights).numpy()


def normalise_heatmaps(raw: np.ndarray) -> np.ndarray:
    """Keep the positive part of each map and scale it so that its maximum is 1 (all zeros stay zeros)."""
    positive = np.maximum(np.asarray(raw, dtype=np.float32), 0.0)
    peaks = positive.max(axis=(1, 2), keepdims=True)
    return np.divide(positive, peaks, out=np.zeros_like(positive), where=peaks > 0)


def split_classifier(model: keras.Model, layer_name: str, name: str = "") -> CamModel:
    """Split a classifier at a convolutional layer for class-activation maps.

    The layer may sit at the top of ``model`` or inside a nested model, like the backbone network that
    ``build_classifier`` nests under the backbone's name. Every path from the frames to the predictions
    must pass through that layer.

    Args:
        model: a classifier from frames to class probabilities (or scores).
        layer_name: the layer whose output is the feature maps, e.g. ``REGISTRY[name].last_conv_layer``.
        name: label of the model in logs and errors; defaults to ``model.name``.

    Raises:
        CamError: the layer is missing, has several inputs or outputs, or is bypassed by some path.
    """
    layer, nested = _find_layer(model, layer_name)
    frames = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="image")

    # Frames -> maps, and the tensor from which the rest of the outer graph continues.
    if nested is None:
        _, maps = _call_tensors(model, layer)
        features = keras.Model(frames, _submodel(model.inputs, maps, repr(layer_name))(frames))
        outer_maps, inner_tail = maps, None
    else:
        nested_input, nested_output = _call_tensors(model, nested)
        _, maps = _call_tensors(nested, layer)
        lead = _submodel(model.inputs, nested_input, f"the input of {nested.name!r}")
        inner_lead = _submodel(nested.inputs, maps, repr(layer_name))
        features = keras.Model(frames, inner_lead(lead(frames)))
        outer_maps = nested_output
        inner_tail = None if maps is nested.outputs[0] else _submodel(maps, nested.outputs[0], repr(layer_name))

    # Maps -> class scores: logits when the model ends in a softmax dense layer.
    last, last_node = _history(model.outputs[0])
    ends_in_softmax = (isinstance(last, keras.layers.Dense)
                       and getattr(last.activation, "__name__", "") == "softmax")
    score_end = last_node.input_tensors[0] if ends_in_softmax else model.outputs[0]
    outer_tail = _submodel(outer_maps, score_end, repr(layer_name))
    dense_kernel = None
    if ends_in_softmax and inner_tail is None:
        dense_kernel = _pooled_dense_kernel(score_end, outer_maps, last)

    def score(feature_maps: Any) -> Any:
        hidden = inner_tail(feature_maps, training=False) if inner_tail is not None else feature_maps
        hidden = outer_tail(hidden, training=False)
        if not ends_in_softmax:
            return hidden
        hidden = keras.ops.cast(hidden, last.kernel.dtype)
        return keras.ops.matmul(hidden, last.kernel) + last.bias

    return CamModel(features=features, score=score, logits=ends_in_softmax, dense_kernel=dense_kernel,
                    features_key=(id(nested if nested is not None else model), layer_name),
                    name=name or model.name)


# --- Ensembles of fold models --------------------------------------------------------------------


@dataclass
class Activations:
    """One forward pass of a batch through an ensemble: each model's maps and the mean probabilities."""

    models: Sequence[CamModel]
    maps: list[tf.Tensor]
    probabilities: np.ndarray


@dataclass(frozen=True)
class Explanation:
    """Predictions and heatmaps for a batch of frames.

    Attributes:
        probabilities: (n, classes) mean class probabilities of the ensemble.
        classes: (n,) the class each heatmap shows.
        heatmaps: (n, h, w) values in [0, 1] on the feature-map grid.
    """

    probabilities: np.ndarray
    classes: np.ndarray
    heatmaps: np.ndarray


def compute_activations(models: Sequence[CamModel], images: np.ndarray) -> Activations:
    """Run a batch of frames through every model, computing shared feature maps only once.

    Raises:
        CamError: no models, or models that take different input sizes.
    """
    if not models:
        raise CamError("no models to explain with")
    sizes = {model.input_size for model in models}
    if len(sizes) > 1:
        raise CamError(f"the models take different input sizes {sorted(sizes)}; explain one backbone at a time")

    computed: dict[Hashable, tf.Tensor] = {}
    maps, probabilities = [], []
    for model in models:
        if model.features_key not in computed:
            computed[model.features_key] = model.feature_maps(images)
        maps.append(computed[model.features_key])
        probabilities.append(model.probabilities(maps[-1]))
    return Activations(models=models, maps=maps, probabilities=np.mean(probabilities, axis=0))


def class_heatmaps(activations: Activations, classes: np.ndarray, method: str = "auto") -> np.ndarray:
    """Return the ensemble's heatmaps for the given class per frame: the mean of its models' heatmaps."""
    heatmaps = [model.heatmaps(maps, classes, method) for model, maps in zip(activations.models, activations.maps)]
    grids = {heatmap.shape[1:] for heatmap in heatmaps}
    if len(grids) > 1:
        raise CamError(f"the models' feature maps have different grids {sorted(grids)}; "
                       "explain one backbone at a time")
    return np.mean(heatmaps, axis=0)


def explain_frames(models: Sequence[CamModel], images: np.ndarray, classes: np.ndarray | None = None,
                   method: str = "auto") -> Explanation:
    """Predict a batch of frames and compute the heatmap of each frame's class.

    Args:
        models: one model, or the fold models of one backbone (probabilities and heatmaps are averaged).
        images: (n, height, width, 3) float frames in [0, 255] at the models' input size.
        classes: the class index to explain per frame; None explains the predicted class.
        method: ``auto``, ``cam`` or ``gradcam``.
    """
    activations = compute_activations(models, images)
    if classes is None:
        classes = activations.probabilities.argmax(axis=1)
    classes = np.asarray(classes, dtype=np.int64)
    return Explanation(probabilities=activations.probabilities, classes=classes,
                       heatmaps=class_heatmaps(activations, classes, method))


# --- Pictures ------------------------------------------------------------------------------------


def overlay_heatmap(frame: np.ndarray, heatmap: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Colour a frame by a heatmap: hot cells turn red and yellow, cold cells keep the frame's pixels.

    Args:
        frame: (height, width, 3) uint8 RGB frame of any size.
        heatmap: (h, w) values in [0, 1], stretched over the whole frame with bicubic interpolation.
        opacity: weight of the colour where the heatmap is 1; it falls linearly to 0 where it is 0.

    Returns:
        The (height, width, 3) uint8 RGB overlay.
    """
    height, width = frame.shape[:2]
    heat = np.clip(cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    colours = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = opacity * heat[..., None]
    blended = frame.astype(np.float32) * (1 - weight) + colours.astype(np.float32) * weight
    return np.round(blended).astype(np.uint8)
