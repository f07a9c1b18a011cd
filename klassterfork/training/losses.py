"""Per-example losses. The train loop averages over the GLOBAL batch itself,
so every loss here is built with `reduction=None`."""

import keras
from keras import ops

from klassterfork.registry import Registry

LOSSES = Registry("loss")
for _name in (
    "SparseCategoricalCrossentropy",
    "CategoricalCrossentropy",
    "MeanSquaredError",
    "CosineSimilarity",
):
    LOSSES.add(_name, getattr(keras.losses, _name))


def _log_probs(y_pred, from_logits):
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    eps = keras.config.epsilon()
    return ops.log(ops.clip(y_pred, eps, 1.0 - eps))


def _check_smoothing(label_smoothing):
    if not 0 <= float(label_smoothing) < 1:
        raise ValueError(
            "`label_smoothing` must be in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )
    return float(label_smoothing)


@LOSSES.register("SparseCategoricalCrossentropyLS")
@keras.saving.register_keras_serializable(package="klassterfork")
class SparseCategoricalCrossentropyLS(keras.losses.Loss):
    """Cross-entropy of integer labels with label smoothing.

    The target of label y is (1 - e) * onehot(y) + e / C, so the loss is
    -(1 - e) * log p_y - e * mean_c(log p_c) (Szegedy et al. 2016; VideoMAE
    uses e = 0.1). Keras 3's `SparseCategoricalCrossentropy` has no
    `label_smoothing`.

    Args:
        from_logits: bool. Whether `y_pred` are logits (else probabilities).
            Defaults to True.
        label_smoothing: float. e in [0, 1). Defaults to 0.1.
        reduction: str or None. Keras reduction; the trainer passes None.
        name: str.

    Call: y_true int (B,) or (B, 1); y_pred (B, C). Returns (B,) with
    `reduction=None`.
    """

    def __init__(
        self,
        from_logits=True,
        label_smoothing=0.1,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy_ls",
    ):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        log_p = _log_probs(y_pred, self.from_logits)
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        onehot = ops.one_hot(labels, ops.shape(log_p)[-1], dtype=log_p.dtype)
        nll = -ops.sum(onehot * log_p, axis=-1)
        uniform = -ops.mean(log_p, axis=-1)
        e = self.label_smoothing
        return (1.0 - e) * nll + e * uniform

    def get_config(self):
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
        }


@LOSSES.register("SoftTargetCrossentropy")
@keras.saving.register_keras_serializable(package="klassterfork")
class SoftTargetCrossentropy(keras.losses.Loss):
    """Cross-entropy to a target distribution (mixup / cutmix targets).

    loss = -sum_c t_c * log p_c with t = (1 - e) * y_true + e / C (timm's
    `SoftTargetCrossEntropy`, smoothing optional).

    Args:
        from_logits: bool. Defaults to True.
        label_smoothing: float. e in [0, 1). Defaults to 0.
        reduction: str or None. The trainer passes None.
        name: str.

    Call: y_true (B, C) probabilities (rows sum to 1); y_pred (B, C).
    Returns (B,) with `reduction=None`.
    """

    def __init__(
        self,
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="soft_target_crossentropy",
    ):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        log_p = _log_probs(y_pred, self.from_logits)
        target = ops.cast(y_true, log_p.dtype)
        if self.label_smoothing:
            num_classes = ops.cast(ops.shape(log_p)[-1], log_p.dtype)
            e = self.label_smoothing
            target = (1.0 - e) * target + e / num_classes
        return -ops.sum(target * log_p, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
        }


@LOSSES.register("EmbeddingMSE")
@keras.saving.register_keras_serializable(package="klassterfork")
class EmbeddingMSE(keras.losses.Loss):
    """Mean squared error to the L2-normalized target embedding (zero-shot).

    loss = mean_d (y_pred_d - y_true_d / max(||y_true||, 1e-12))^2. The
    prediction is used as is (`EmbeddingHead` already normalizes it).

    Args:
        reduction: str or None. The trainer passes None.
        name: str.

    Call: y_true (B, D) word embeddings (any norm); y_pred (B, D). Returns
    (B,) with `reduction=None`.
    """

    def __init__(self, reduction="sum_over_batch_size", name="embedding_mse"):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        target = ops.cast(y_true, "float32")
        norm = ops.sqrt(ops.sum(ops.square(target), axis=-1, keepdims=True))
        target = target / ops.maximum(norm, 1e-12)
        return ops.mean(ops.square(y_pred - target), axis=-1)
