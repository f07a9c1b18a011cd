"""Zero-shot metrics against a naive pure-Python reference."""

import math
import statistics
import subprocess
import sys

import numpy as np
import pytest

from klassterfork.evaluation import zero_shot


def reference(features, video_index, labels, class_matrix, ks=(1, 5), classes=None):
    """Loop-by-loop top-k: per video mean, cosine, count of beating classes.

    `classes`: optional subset of class ids (relabelled by position); videos
    of other classes are skipped.
    """
    classes = list(range(len(class_matrix))) if classes is None else list(classes)
    clips = {}
    for f, v, y in zip(features.tolist(), video_index.tolist(), labels.tolist()):
        clips.setdefault(v, []).append((f, y))
    hits = {k: 0 for k in ks}
    count = 0
    for v in sorted(clips):
        label = clips[v][0][1]
        if label not in classes:
            continue
        count += 1
        rows = [f for f, _ in clips[v]]
        mean = [sum(col) / len(rows) for col in zip(*rows)]
        scores = []
        for c in classes:
            w = class_matrix[c].tolist()
            dot = sum(a * b for a, b in zip(mean, w))
            scores.append(
                dot
                / (
                    math.sqrt(sum(a * a for a in mean))
                    * math.sqrt(sum(b * b for b in w))
                )
            )
        own = classes.index(label)
        rank = 0
        for j, s in enumerate(scores):
            if s > scores[own] + 1e-12 or (abs(s - scores[own]) <= 1e-12 and j < own):
                rank += 1
        for k in ks:
            hits[k] += rank < k
    return {f"top{k}": hits[k] / count for k in ks}


def random_data(seed, num_videos=40, num_classes=12, dim=8):
    rng = np.random.default_rng(seed)
    clips_per_video = rng.integers(1, 6, size=num_videos)
    video_ids = rng.permutation(1000)[:num_videos]  # arbitrary, unsorted
    video_labels = rng.integers(0, num_classes, size=num_videos)
    video_index = np.repeat(video_ids, clips_per_video)
    labels = np.repeat(video_labels, clips_per_video)
    order = rng.permutation(len(video_index))  # clips interleaved
    class_matrix = rng.normal(size=(num_classes, dim)).astype(np.float32)
    # Features near their class so accuracies are neither 0 nor 1.
    features = (
        class_matrix[labels] * 0.3 + rng.normal(size=(len(labels), dim))
    ).astype(np.float32)
    return features[order], video_index[order], labels[order], class_matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_classes_matches_reference(seed):
    data = random_data(seed)
    got = zero_shot.zero_shot_accuracy(*data)
    want = reference(*data)
    assert got["top1"] == pytest.approx(want["top1"], abs=1e-12)
    assert got["top5"] == pytest.approx(want["top5"], abs=1e-12)
    assert got["num_videos"] == 40
    assert 0 < got["top1"] < got["top5"] < 1


def test_ties_go_to_the_lower_class_index():
    # Classes 1 and 3 have the same direction (3 = 2 x 1): equal cosines.
    class_matrix = np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 2, 0], [1, 1, 0]], np.float64
    )
    features = np.array([[0, 5, 0], [0, 5, 0], [0, 1, 1e-3]], np.float64)
    video_index = np.array([0, 1, 2])
    labels = np.array([1, 3, 3])
    scores = zero_shot.cosine_scores(features, class_matrix)
    assert scores[0, 1] == scores[0, 3]  # an exact tie
    # video 0 (label 1) wins the tie; video 1 (label 3) loses it to class 1;
    # video 2: classes 1 and 3 tie again (both cos ~1), label 3 -> rank 1.
    np.testing.assert_array_equal(zero_shot.label_ranks(scores, labels), [0, 1, 1])
    np.testing.assert_array_equal(zero_shot.predict(scores), [1, 1, 1])
    got = zero_shot.zero_shot_accuracy(
        features, video_index, labels, class_matrix, top_k=(1, 2)
    )
    assert got["top1"] == pytest.approx(1 / 3) and got["top2"] == 1.0
    assert got == {
        **reference(features, video_index, labels, class_matrix, ks=(1, 2)),
        "num_videos": 3,
    }


def test_ties_with_a_shuffled_class_order_are_still_by_index():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(4, 6))
    class_matrix = np.concatenate([base, base * 3, base[:1] * 0.5])  # 9 rows
    features = np.repeat(base, 3, axis=0)  # every score ties exactly
    labels = rng.integers(0, 9, size=12)
    ranks = zero_shot.label_ranks(
        zero_shot.cosine_scores(features, class_matrix), labels
    )
    want = reference(features, np.arange(12), labels, class_matrix, ks=(1, 2, 3))
    for k in (1, 2, 3):
        assert np.mean(ranks < k) == pytest.approx(want[f"top{k}"])


def test_average_by_video_by_hand():
    features = np.array([[1.0, 2], [3, 4], [10, 10], [5, 6]])
    ids, means, labels = zero_shot.average_by_video(
        features, [7, 2, 7, 7], [4, 1, 4, 4]
    )
    np.testing.assert_array_equal(ids, [2, 7])
    np.testing.assert_allclose(means, [[3, 4], [16 / 3, 6]])
    np.testing.assert_array_equal(labels, [1, 4])
    with pytest.raises(
        ValueError,
        match=r"video 7 disagree on the label: "
        r"\[3, 4\]",
    ):
        zero_shot.average_by_video(features, [7, 2, 7, 7], [4, 1, 3, 4])
    with pytest.raises(ValueError, match=r"len\(video_index\) = 3"):
        zero_shot.average_by_video(features, [1, 2, 3])


def test_top5_with_fewer_than_five_classes_is_one():
    data = random_data(3, num_classes=4)
    assert zero_shot.zero_shot_accuracy(*data)["top5"] == 1.0


def test_errors_name_the_argument():
    with pytest.raises(
        ValueError,
        match=r"`class_matrix` must be \(C, D\) "
        r"with D = 8.*shape=\(3, 7\)",
    ):
        zero_shot.cosine_scores(np.ones((2, 8)), np.ones((3, 7)))
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 3\)"):
        zero_shot.label_ranks(np.ones((2, 3)), [0, 3])


def test_random_class_splits_are_seeded_halves():
    splits = zero_shot.random_class_splits(101, num_splits=10, seed=0)
    assert len(splits) == 10
    assert all(len(s) == 50 and len(set(s.tolist())) == 50 for s in splits)
    assert all(0 <= s.min() and s.max() < 101 for s in splits)
    assert len({tuple(s) for s in splits}) == 10
    again = zero_shot.random_class_splits(101, num_splits=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, splits))
    other = zero_shot.random_class_splits(101, num_splits=1, seed=1)
    assert not np.array_equal(other[0], splits[0])


def test_split_protocol_matches_reference():
    data = random_data(4, num_videos=120, num_classes=20)
    got = zero_shot.zero_shot_splits(*data, num_splits=10, seed=3)
    top1, top5 = [], []
    for classes in got["splits"]:
        want = reference(*data, classes=classes.tolist())
        top1.append(want["top1"])
        top5.append(want["top5"])
    np.testing.assert_allclose(got["top1"], top1, atol=1e-12)
    np.testing.assert_allclose(got["top5"], top5, atol=1e-12)
    assert got["top1_mean"] == pytest.approx(statistics.fmean(top1))
    assert got["top1_std"] == pytest.approx(statistics.pstdev(top1))
    assert got["top5_std"] == pytest.approx(statistics.pstdev(top5))
    assert got["top1_std"] > 0
    # A half of the classes is an easier task than all of them.
    assert got["top1_mean"] > zero_shot.zero_shot_accuracy(*data)["top1"]


def test_accumulator_equals_one_shot():
    features, video_index, labels, class_matrix = random_data(6)
    acc = zero_shot.ZeroShotAccumulator(class_matrix)
    with pytest.raises(ValueError, match="call `update` first"):
        acc.result()
    for start in range(0, len(labels), 7):  # batches split videos
        sl = slice(start, start + 7)
        acc.update(features[sl], video_index[sl], labels[sl])
    assert acc.result() == zero_shot.zero_shot_accuracy(
        features, video_index, labels, class_matrix
    )
    splits = acc.result_splits(num_splits=3, seed=2)
    assert (
        splits["top1"]
        == zero_shot.zero_shot_splits(
            features, video_index, labels, class_matrix, num_splits=3, seed=2
        )["top1"]
    )


def test_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys, klassterfork.evaluation.zero_shot, "
        "klassterfork.evaluation.wordvec; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
