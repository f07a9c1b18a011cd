import numpy as np
import pytest

from klassterfork.training.losses import (
    LOSSES,
    EmbeddingMSE,
    SoftTargetCrossentropy,
    SparseCategoricalCrossentropyLS,
)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 3, (6, 5)).astype("float32")
LABELS = np.array([0, 4, 2, 2, 1, 3])


def np_log_softmax(x):
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_smoothed_ce(labels, logits, eps):
    """Explicit smoothed one-hot target, then -sum t log p (torch's formula)."""
    num_classes = logits.shape[-1]
    target = np.full(logits.shape, eps / num_classes)
    target[np.arange(len(labels)), labels] += 1.0 - eps
    return -(target * np_log_softmax(logits)).sum(-1)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_sparse_ce_label_smoothing_matches_numpy(eps):
    loss = SparseCategoricalCrossentropyLS(label_smoothing=eps, reduction=None)
    got = np.asarray(loss(LABELS, LOGITS))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, np_smoothed_ce(LABELS, LOGITS, eps), rtol=1e-5)


def test_sparse_ce_by_hand_probabilities_and_column_labels():
    # Uniform logits over 4 classes: every term is log 4, whatever e is.
    loss = SparseCategoricalCrossentropyLS(label_smoothing=0.1, reduction=None)
    assert float(loss(np.array([[2]]), np.zeros((1, 4)))[0]) == pytest.approx(np.log(4))
    # Probabilities [.5, .25, .25], label 0, e = .3: target [.8, .1, .1].
    probs = SparseCategoricalCrossentropyLS(
        from_logits=False, label_smoothing=0.3, reduction=None
    )
    expected = 0.8 * np.log(2) + 0.2 * np.log(4)
    got = float(probs(np.array([0]), np.array([[0.5, 0.25, 0.25]]))[0])
    assert got == pytest.approx(expected, rel=1e-5)
    mean = SparseCategoricalCrossentropyLS(label_smoothing=0.1)  # default reduction
    assert float(mean(LABELS, LOGITS)) == pytest.approx(
        np_smoothed_ce(LABELS, LOGITS, 0.1).mean(), rel=1e-5
    )


def test_soft_target_ce_matches_numpy_mixup_targets():
    onehot = np.eye(5)[LABELS]
    lam = 0.7
    targets = lam * onehot + (1 - lam) * onehot[::-1]  # mixup with the reversed batch
    got = np.asarray(SoftTargetCrossentropy(reduction=None)(targets, LOGITS))
    expected = -(targets * np_log_softmax(LOGITS)).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The mixed loss is the mix of the two losses (linearity in the target).
    a = np_smoothed_ce(LABELS, LOGITS, 0.0)
    b = np_smoothed_ce(LABELS[::-1], LOGITS, 0.0)
    np.testing.assert_allclose(got, lam * a + (1 - lam) * b, rtol=1e-5)
    smoothed = SoftTargetCrossentropy(label_smoothing=0.1, reduction=None)
    np.testing.assert_allclose(
        np.asarray(smoothed(onehot, LOGITS)),
        np_smoothed_ce(LABELS, LOGITS, 0.1),
        rtol=1e-5,
    )


def test_embedding_mse_normalizes_the_target_only():
    target = RNG.normal(0, 4, (3, 8))
    pred = RNG.normal(0, 1, (3, 8)).astype("float32")
    got = np.asarray(EmbeddingMSE(reduction=None)(target, pred))
    unit = target / np.linalg.norm(target, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, ((pred - unit) ** 2).mean(-1), rtol=1e-5)
    # By hand: target (3, 4) -> (.6, .8); prediction (0, 0): (.36 + .64) / 2.
    assert float(
        EmbeddingMSE(reduction=None)(np.array([[3.0, 4.0]]), np.zeros((1, 2)))[0]
    ) == pytest.approx(0.5)
    # A zero target does not divide by zero.
    assert np.isfinite(
        np.asarray(EmbeddingMSE(reduction=None)(np.zeros((1, 2)), np.ones((1, 2))))
    ).all()


@pytest.mark.parametrize(
    "cls", [SparseCategoricalCrossentropyLS, SoftTargetCrossentropy, EmbeddingMSE]
)
def test_registered_reduction_none_and_config_round_trip(cls):
    name = cls.__name__
    assert LOSSES[name] is cls
    assert "reduction" in LOSSES.accepted_args(name)  # the trainer forces None
    loss = cls(reduction=None)
    assert cls.from_config(loss.get_config()).get_config() == loss.get_config()


def test_bad_label_smoothing_is_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        SparseCategoricalCrossentropyLS(label_smoothing=1.0)
