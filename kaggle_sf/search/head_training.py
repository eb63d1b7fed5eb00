"""Fast training of dropout + dense softmax heads on bottleneck features, for the head search.

``fit_head`` trains the head of ``kaggle_sf.models.heads.build_head`` as ``train_head_fold`` does with
Keras ``fit``. It has the same Glorot-uniform kernel and zero bias, inverted dropout, and loss
(cross-entropy plus the L2 penalty of the kernel). It applies Keras' Adam update (beta 0.9 and 0.999,
epsilon 1e-7), shuffles the rows anew every epoch, and stops early, restoring the best epoch.

The graph is traced once per process and feature width, with the settings as inputs, and each epoch is
one graph call. A new graph per head, as Keras ``fit`` traces, kept about 3 MB in TensorFlow 2.21 for
the life of the process, which adds up over hundreds of heads.

On the 1,171 full-resolution frames with 256 MobileNet-0.25 features at 224x224, 6 seeds of the
default settings' five fold heads trained in 20 seconds in all, tracing included, where ``fit`` took
247 seconds for 3 seeds (a 2-core CPU shared with other jobs). The shuffling and dropout draws differ
from ``fit``'s, so single runs differ, but the out-of-fold log loss agreed: 1.687 with a standard
deviation of 0.005 over the 6 seeds, against ``fit``'s 1.687 with 0.002 over its 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kaggle_sf.config import CLASSES, HeadConfig

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
"""Keras' Adam defaults (Keras 3.15), which ``train_head_fold`` uses."""


@dataclass(frozen=True)
class HeadFit:
    """A head trained on one fold."""

    probabilities: np.ndarray
    """Validation probabilities of the best epoch."""
    weights: list[np.ndarray]
    """Weights of the best epoch in ``build_head``'s order: kernel (features x classes), bias."""
    best_epoch: int
    epochs: int


class _HeadGraph:
    """Variables and the compiled epoch of heads on ``n_features`` features."""

    def __init__(self, n_features: int) -> None:
        import tensorflow as tf

        n_classes = len(CLASSES)
        self.kernel = tf.Variable(tf.zeros((n_features, n_classes)), name="kernel")
        self.bias = tf.Variable(tf.zeros((n_classes,)), name="bias")
        self.moments = [tf.Variable(tf.zeros_like(v)) for v in (self.kernel, self.bias) for _ in range(2)]
        self.step = tf.Variable(0.0, name="step")
        vector, matrix = tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, n_features], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)
        self.train_epoch = tf.function(self._train_epoch, input_signature=[
            matrix, vector, matrix, vector, vector, scalar, scalar, scalar, tf.TensorSpec([], tf.int64),
            tf.TensorSpec([2], tf.int64)])

    def reset(self, seed: int) -> None:
        """Start a new head: Glorot-uniform kernel drawn from ``seed``, zero bias, fresh Adam moments."""
        fan_in, fan_out = self.kernel.shape
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernel = np.random.default_rng(seed).uniform(-limit, limit, size=(fan_in, fan_out))
        self.kernel.assign(kernel.astype(np.float32))
        self.bias.assign(np.zeros(self.bias.shape, np.float32))
        for moment in self.moments:
            moment.assign(np.zeros(moment.shape, np.float32))
        self.step.assign(0.0)

    def _loss(self, features, labels, weight_decay):
        import tensorflow as tf

        logits = tf.matmul(features, self.kernel) + self.bias
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return cross_entropy + weight_decay * tf.reduce_sum(tf.square(self.kernel)), logits

    def _train_epoch(self, features, labels, val_features, val_labels, order, learning_rate, dropout, weight_decay,
                     batch_size, seed):
        import tensorflow as tf

        for start in tf.range(0, tf.shape(order, out_type=tf.int64)[0], batch_size):
            rows = order[start:start + batch_size]
            batch = tf.gather(features, rows)
            # Inverted dropout, as keras.layers.Dropout applies it while training.
            keep = tf.random.stateless_uniform(tf.shape(batch), tf.random.experimental.stateless_fold_in(
                seed, start)) >= dropout
            batch = tf.where(keep, batch / (1.0 - dropout), 0.0)
            with tf.GradientTape() as tape:
                loss, _ = self._loss(batch, tf.gather(labels, rows), weight_decay)
            gradients = tape.gradient(loss, [self.kernel, self.bias])

            # Keras 3's Adam update step.
            self.step.assign_add(1.0)
            alpha = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2 ** self.step) / (1.0 - ADAM_BETA_1 ** self.step)
            for index, (variable, gradient) in enumerate(zip([self.kernel, self.bias], gradients)):
                first, second = self.moments[2 * index], self.moments[2 * index + 1]
                first.assign_add((gradient - first) * (1.0 - ADAM_BETA_1))
                second.assign_add((tf.square(gradient) - second) * (1.0 - ADAM_BETA_2))
                variable.assign_sub(first * alpha / (tf.sqrt(second) + ADAM_EPSILON))

        # Keras reports the validation loss with the L2 penalty included, and early stopping watches it.
        val_loss, val_logits = self._loss(val_features, val_labels, weight_decay)
        return val_loss, tf.nn.softmax(val_logits)


@lru_cache(maxsize=8)
def _head_graph(n_features: int) -> _HeadGraph:
    return _HeadGraph(n_features)


def fit_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, head: HeadConfig,
             seed: int) -> HeadFit:
    """Train a dropout + softmax head and return its validation predictions at the best epoch.

    Training stops when the validation loss (cross-entropy plus the L2 penalty) has not improved for
    ``head.patience`` epochs, or after ``head.max_epochs``, as in ``train_head_fold``.

    Args:
        train_x, train_y: features and class indices of the training drivers.
        val_x, val_y: features and class indices of the held-out drivers.
        head: learning rate, dropout, weight decay, batch size, epochs and patience.
        seed: seed of the initial weights, the dropout masks and the shuffling.
    """
    import tensorflow as tf

    graph = _head_graph(train_x.shape[1])
    graph.reset(seed)
    data = [tf.constant(train_x, tf.float32), tf.constant(train_y, tf.int64), tf.constant(val_x, tf.float32),
            tf.constant(val_y, tf.int64)]
    settings = [tf.constant(head.learning_rate, tf.float32), tf.constant(head.dropout, tf.float32),
                tf.constant(head.weight_decay, tf.float32), tf.constant(head.batch_size, tf.int64)]

    # A new order every epoch, as train_head_fold's reshuffled dataset gives.
    shuffling = np.random.default_rng(seed)

    # Early stopping as keras.callbacks.EarlyStopping(patience, restore_best_weights=True) does it.
    best_loss, best_epoch, wait = math.inf, 0, 0
    best_probabilities, best_weights = None, None
    for epoch in range(head.max_epochs):
        order = tf.constant(shuffling.permutation(len(train_x)), tf.int64)
        val_loss, probabilities = graph.train_epoch(*data, order, *settings, tf.constant([seed, epoch], tf.int64))
        wait += 1
        if float(val_loss) < best_loss:
            best_loss, best_epoch, wait = float(val_loss), epoch + 1, 0
            best_probabilities = probabilities.numpy()
            best_weights = [graph.kernel.numpy(), graph.bias.numpy()]
        elif wait >= head.patience and epoch > 0:
            break
    if best_probabilities is None:
        # Every epoch's loss was NaN: the rate diverged from the start.
        best_probabilities, best_weights = probabilities.numpy(), [graph.kernel.numpy(), graph.bias.numpy()]
    return HeadFit(probabilities=best_probabilities.astype(np.float64), weights=best_weights,
                   best_epoch=best_epoch, epochs=epoch + 1)
