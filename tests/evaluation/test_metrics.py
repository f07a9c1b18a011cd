"""Metrics and aggregation against naive-loop references on crafted scores."""

import numpy as np
import pytest

from klassterfork.evaluation import aggregate, metrics

# ---------------------------------------------------------------- references


def ref_rank(row, c):
    """Rank of class c (0 = best); ties go to the lower class index."""
    return sum(
        1 for j in range(len(row))
        if row[j] > row[c] or (row[j] == row[c] and j < c)
    )


def ref_label_lists(labels):
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    return [[int(x) for x in row if x >= 0] for row in labels]


def ref_top_k(scores, labels, k):
    hits = 0
    for row, labs in zip(scores, ref_label_lists(labels)):
        hits += any(ref_rank(row, c) < k for c in labs)
    return hits / len(scores)


def ref_mean_class_accuracy(scores, labels, k):
    per_class = []
    for c in range(scores.shape[1]):
        members = [n for n, labs in enumerate(ref_label_lists(labels))
                   if c in labs]
        if not members:
            continue
        per_class.append(
            sum(ref_rank(scores[n], c) < k for n in members) / len(members))
    return sum(per_class) / len(per_class)


def ref_precision_recall(scores, labels):
    lists = ref_label_lists(labels)
    preds = [min(range(len(r)), key=lambda c: ref_rank(r, c)) for r in scores]
    prec, rec = [], []
    for c in range(scores.shape[1]):
        predicted = sum(p == c for p in preds)
        correct = sum(p == c and c in lab for p, lab in zip(preds, lists))
        support = sum(c in lab for lab in lists)
        prec.append(correct / predicted if predicted else np.nan)
        rec.append(correct / support if support else np.nan)
    return np.array(prec), np.array(rec)


def ref_average_precision(positives_in_rank_order):
    """AP = mean over positives of the best precision at or after them."""
    npos = sum(positives_in_rank_order)
    precisions, tp = [], 0
    for i, pos in enumerate(positives_in_rank_order, 1):
        tp += pos
        precisions.append(tp / i)
    total = 0.0
    for i, pos in enumerate(positives_in_rank_order):
        if pos:
            total += max(precisions[i:])
    return total / npos


def ref_map(scores, labels):
    lists = ref_label_lists(labels)
    aps = []
    for c in range(scores.shape[1]):
        if not any(c in lab for lab in lists):
            continue
        # insertion sort by descending score, ties keep video order
        order = []
        for n in range(len(scores)):
            i = 0
            while i < len(order) and scores[order[i], c] >= scores[n, c]:
                i += 1
            order.insert(i, n)
        aps.append(ref_average_precision([c in lists[n] for n in order]))
    return sum(aps) / len(aps)


def crafted(seed, num_videos=40, num_classes=9, multi=False):
    """Integer scores in 0..3 (many ties); class num_classes-1 has no sample."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(num_videos, num_classes)).astype(float)
    labels = rng.integers(0, num_classes - 1, size=num_videos)
    if multi:
        second = rng.integers(0, num_classes - 1, size=num_videos)
        second[rng.random(num_videos) < 0.5] = -1
        second[second == labels] = -1
        labels = np.stack([labels, second], axis=1)
    return scores, labels


CASES = [crafted(s) for s in range(3)] + [crafted(7, multi=True)]


# ------------------------------------------------------------------ metrics


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_and_mean_class_match_reference(case, k):
    scores, labels = CASES[case]
    assert metrics.top_k_accuracy(scores, labels, k) == pytest.approx(
        ref_top_k(scores, labels, k))
    assert metrics.mean_class_accuracy(scores, labels, k) == pytest.approx(
        ref_mean_class_accuracy(scores, labels, k))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_precision_recall_and_map_match_reference(case):
    scores, labels = CASES[case]
    got = metrics.per_class_precision_recall(scores, labels)
    prec, rec = ref_precision_recall(scores, labels)
    np.testing.assert_allclose(got["precision"], prec, equal_nan=True)
    np.testing.assert_allclose(got["recall"], rec, equal_nan=True)
    assert np.isnan(got["recall"][-1])  # the class without samples
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(
        ref_map(scores, labels))


def test_ties_go_to_the_lower_class_index():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    # video 0: label 1 ties with class 0, which ranks first
    assert metrics.top_k_accuracy(scores, [1, 1], k=1) == 0.5
    assert metrics.top_k_accuracy(scores, [1, 2], k=1) == 0.0
    assert metrics.top_k_accuracy(scores, [1, 2], k=2) == 1.0
    np.testing.assert_array_equal(metrics.top_k_indices(scores, 2),
                                  [[0, 1], [1, 2]])


def test_mean_class_accuracy_by_hand_excludes_empty_classes():
    scores = np.eye(4)[[0, 0, 0, 1, 2]]  # predictions 0, 0, 0, 1, 2
    labels = np.array([0, 0, 1, 1, 2])  # class 3 has no sample
    # class 0: 2/2, class 1: 1/2, class 2: 1/1 -> mean 2.5 / 3
    assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(
        2.5 / 3)
    assert metrics.top_k_accuracy(scores, labels) == pytest.approx(4 / 5)


def test_map_by_hand_and_activitynet_summary():
    # class 0 ranked: v0 (pos), v1 (neg), v2 (pos): AP = .5*1 + .5*2/3
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    labels = np.array([0, 1, 0])
    ap0 = 0.5 + 0.5 * 2 / 3
    # class 1 ranked: v2, v1 (pos), v0: AP = 1/2
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(
        (ap0 + 0.5) / 2)
    out = metrics.activitynet_metrics(scores, labels)
    assert out["hit@1"] == pytest.approx(2 / 3)
    assert out["hit@5"] == 1.0  # k clipped to C = 2
    assert out["avg_hit"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["mean_error"] == pytest.approx(1 - out["avg_hit"])


def test_multi_label_hit_counts_any_label():
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    labels = np.array([[3, 1]])
    assert metrics.hit_at_k(scores, labels, 1) == 0.0
    assert metrics.hit_at_k(scores, labels, 2) == 1.0


def test_summary_keys_and_values():
    scores, labels = CASES[0]
    out = metrics.summary(scores, labels)
    assert out["num_classes_with_samples"] == 8
    assert out["top1"] == pytest.approx(ref_top_k(scores, labels, 1))
    assert out["top5"] == pytest.approx(ref_top_k(scores, labels, 5))


@pytest.mark.parametrize("labels, message", [
    ([0, 5], "labels must lie in"),
    ([0, -1], "needs a label"),
    ([0], "same number of videos"),
])
def test_bad_labels_raise_with_the_value(labels, message):
    with pytest.raises(ValueError, match=message):
        metrics.top_k_accuracy(np.zeros((2, 3)), labels)


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="scores.shape=\\(3,\\)"):
        metrics.top_k_accuracy(np.zeros(3), [0, 0, 0])


# -------------------------------------------------------------- aggregation


def test_average_views_is_mean_of_softmax_per_view():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5)) * 3
    ref = np.zeros((4, 5))
    for b in range(4):
        for v in range(3):
            e = np.exp(logits[b, v])
            ref[b] += e / e.sum() / 3
    np.testing.assert_allclose(aggregate.average_views(logits), ref)
    # flattened views, shuffled, with a video index
    flat = logits.reshape(12, 5)
    index = np.repeat(np.arange(4), 3)
    perm = rng.permutation(12)
    np.testing.assert_allclose(
        aggregate.average_views(flat[perm], index[perm]), ref)
    np.testing.assert_allclose(
        aggregate.average_views(logits, apply_softmax=False),
        logits.mean(axis=1))


def test_average_views_rejects_video_without_views():
    with pytest.raises(ValueError, match="without views \\[1\\]"):
        aggregate.average_views(np.zeros((2, 3)), [0, 2])


def test_softmax_is_stable_for_large_logits():
    p = aggregate.softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0])


@pytest.mark.parametrize("k", [10, 30, 50])
def test_top_k_frame_pooling_matches_loop(k):
    rng = np.random.default_rng(k)
    videos = [rng.normal(size=(t, 6)) for t in (40, 12, 64)]
    got = aggregate.top_k_frame_pooling(videos, k)
    for n, v in enumerate(videos):
        kk = min(k, len(v))
        for c in range(6):
            col = sorted(v[:, c], reverse=True)
            assert got[n, c] == pytest.approx(sum(col[:kk]) / kk)
    batch = rng.normal(size=(2, 35, 4))
    np.testing.assert_allclose(
        aggregate.top_k_frame_pooling(batch, k),
        np.stack([aggregate.top_k_frame_pooling(b, k) for b in batch]))


def test_top_k_frame_pooling_by_hand():
    frames = np.array([[1.0, 0.0], [5.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(
        aggregate.top_k_frame_pooling(frames, 2), [4.0, 3.0])


def test_fuse_streams_by_hand_and_alignment():
    rgb = np.array([[0.6, 0.4], [0.2, 0.8]])
    flow = np.array([[0.1, 0.9], [0.3, 0.7]])
    fused = aggregate.fuse_streams([rgb, flow], [1.0, 1.5])
    np.testing.assert_allclose(fused[0], [0.6 * 0.4 + 0.1 * 0.6,
                                          0.4 * 0.4 + 0.9 * 0.6])
    np.testing.assert_allclose(aggregate.fuse_streams([rgb, flow]),
                               (rgb + flow) / 2)
    perm = aggregate.align_by_id(["a", "b", "c"], ["c", "a", "b"])
    assert perm.tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="1 ids only in the first"):
        aggregate.align_by_id(["a", "b"], ["a", "x"])
    with pytest.raises(ValueError, match="weights"):
        aggregate.fuse_streams([rgb, flow], [1.0, -1.0])
