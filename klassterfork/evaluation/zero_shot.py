"""Zero-shot evaluation by nearest class embedding (numpy only, no TF/Keras).

Brattoli et al., "Rethinking Zero-shot Video Classification" (CVPR 2020):
clip features are averaged per video, L2-normalised and compared by cosine
with the class-name embeddings of the target dataset; the predicted class is
the nearest one. Two protocols: all classes, and `num_splits` seeded random
halves of the classes reported as mean and standard deviation.

Ranking and ties: classes are ranked by decreasing cosine; equal scores are
ranked by increasing class index (a stable sort), so a video counts as top-k
correct iff fewer than k classes beat its label, where "beat" means a higher
score, or the same score and a lower index. This makes results deterministic
and independent of the sort algorithm.

The same module holds the class-overlap filter (`filter_overlapping_classes`)
used to remove training classes too close to any target class.
"""

import numpy as np

EPSILON = 1e-12


def l2_normalize(x, axis=-1):
    """x / max(||x||, 1e-12) along `axis`, in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, EPSILON)


def average_by_video(features, video_index, labels=None):
    """Averages clip features per video.

    Args:
        features: float (N, D), one row per clip (or view).
        video_index: int (N,). Clips with the same value belong to one video;
            any integers, in any order.
        labels: int (N,) or None. Clip labels; must agree within a video.

    Returns:
        (video_ids int (V,) sorted ascending, mean features float64 (V, D),
         video labels int (V,) or None).

    Raises:
        ValueError: mismatched lengths, or a video whose clips disagree on the
            label.
    """
    features = np.asarray(features, dtype=np.float64)
    video_index = np.asarray(video_index).reshape(-1)
    if features.ndim != 2 or features.shape[0] != video_index.shape[0]:
        raise ValueError(
            f"`features` must be (N, D) with N = len(video_index) = "
            f"{video_index.shape[0]}. Received: features.shape="
            f"{features.shape}"
        )
    video_ids, inverse = np.unique(video_index, return_inverse=True)
    sums = np.zeros((len(video_ids), features.shape[1]))
    np.add.at(sums, inverse, features)
    counts = np.bincount(inverse, minlength=len(video_ids))
    means = sums / counts[:, None]
    if labels is None:
        return video_ids, means, None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != video_index.shape[0]:
        raise ValueError(
            f"`labels` must have one entry per clip "
            f"({video_index.shape[0]}). Received: "
            f"labels.shape={labels.shape}"
        )
    video_labels = np.empty(len(video_ids), dtype=np.int64)
    video_labels[inverse] = labels
    bad = np.nonzero(video_labels[inverse] != labels)[0]
    if bad.size:
        v = video_index[bad[0]]
        raise ValueError(
            f"Clips of video {v} disagree on the label: "
            f"{sorted(set(labels[video_index == v].tolist()))}."
        )
    return video_ids, means, video_labels


def cosine_scores(features, class_matrix):
    """Cosine similarity of every row of `features` with every class.

    Args:
        features: float (V, D).
        class_matrix: float (C, D). Class embeddings (normalised here).

    Returns:
        float64 (V, C) in [-1, 1].
    """
    features = np.asarray(features)
    class_matrix = np.asarray(class_matrix)
    if class_matrix.ndim != 2 or features.shape[-1] != class_matrix.shape[1]:
        raise ValueError(
            f"`class_matrix` must be (C, D) with D = {features.shape[-1]} "
            f"(the feature size). Received: class_matrix.shape="
            f"{class_matrix.shape}"
        )
    return l2_normalize(features) @ l2_normalize(class_matrix).T


def label_ranks(scores, labels):
    """0-based rank of each label among its row's classes (ties: lower index first).

    Args:
        scores: float (V, C).
        labels: int (V,) in [0, C).

    Returns:
        int (V,): the number of classes that beat the label.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`labels` must be in [0, {num_classes}). Received "
            f"min={labels.min()}, max={labels.max()}"
        )
    rows = np.arange(len(labels))
    own = scores[rows, labels][:, None]
    lower_index = np.arange(num_classes)[None, :] < labels[:, None]
    beats = (scores > own) | ((scores == own) & lower_index)
    return beats.sum(axis=1)


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose label ranks in the first min(k, C) classes."""
    return float(np.mean(label_ranks(scores, labels) < k))


def predict(scores):
    """Nearest class per row (ties: the lowest index). int (V,)."""
    return np.argmax(np.asarray(scores), axis=1)


def zero_shot_accuracy(features, video_index, labels, class_matrix, top_k=(1, 5)):
    """Zero-shot top-k on all classes of the target dataset.

    Args:
        features: float (N, D), clip-level features.
        video_index: int (N,), the video of each clip.
        labels: int (N,), class of each clip (same within a video).
        class_matrix: float (C, D), class embeddings.
        top_k: tuple of int. Defaults to (1, 5).

    Returns:
        dict "top{k}" -> float in [0, 1], plus "num_videos".
    """
    _, feats, video_labels = average_by_video(features, video_index, labels)
    scores = cosine_scores(feats, class_matrix)
    ranks = label_ranks(scores, video_labels)
    result = {f"top{k}": float(np.mean(ranks < k)) for k in top_k}
    result["num_videos"] = len(video_labels)
    return result


def random_class_splits(num_classes, num_splits=10, fraction=0.5, seed=0):
    """Seeded random class subsets (the paper's second protocol).

    Split i uses `np.random.default_rng([seed, i])`, so a split does not
    depend on how many splits are drawn.

    Returns:
        list of `num_splits` sorted int arrays of round(fraction * C) classes.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={fraction}")
    size = max(1, int(round(fraction * num_classes)))
    return [
        np.sort(
            np.random.default_rng([seed, i]).choice(
                num_classes, size=size, replace=False
            )
        )
        for i in range(num_splits)
    ]


def zero_shot_splits(
    features,
    video_index,
    labels,
    class_matrix,
    num_splits=10,
    fraction=0.5,
    seed=0,
    top_k=(1, 5),
):
    """Zero-shot top-k over random class subsets, mean and std.

    For each split only the videos of the chosen classes are scored, and only
    against the chosen classes.

    Args:
        features, video_index, labels, class_matrix, top_k: as in
            `zero_shot_accuracy`.
        num_splits: int. Defaults to 10.
        fraction: float. Share of classes per split. Defaults to 0.5.
        seed: int. Defaults to 0.

    Returns:
        dict "top{k}" -> list of per-split floats, "top{k}_mean",
        "top{k}_std" (population std, ddof=0), and "splits" (class arrays).
    """
    _, feats, video_labels = average_by_video(features, video_index, labels)
    class_matrix = np.asarray(class_matrix)
    splits = random_class_splits(class_matrix.shape[0], num_splits, fraction, seed)
    per_split = {k: [] for k in top_k}
    for classes in splits:
        new_label = np.full(class_matrix.shape[0], -1)
        new_label[classes] = np.arange(len(classes))
        chosen = new_label[video_labels] >= 0
        if not chosen.any():
            raise ValueError(f"No video has a class of split {classes}.")
        scores = cosine_scores(feats[chosen], class_matrix[classes])
        ranks = label_ranks(scores, new_label[video_labels[chosen]])
        for k in top_k:
            per_split[k].append(float(np.mean(ranks < k)))
    result = {"splits": splits}
    for k in top_k:
        values = np.array(per_split[k])
        result[f"top{k}"] = per_split[k]
        result[f"top{k}_mean"] = float(values.mean())
        result[f"top{k}_std"] = float(values.std())
    return result


class ZeroShotAccumulator:
    """Collects batches of clip features, then scores them (numpy, no TF).

    Usage: `acc.update(features, video_index, labels)` per eval batch, then
    `acc.result()` (all classes) or `acc.result_splits()`.

    Args:
        class_matrix: float (C, D). The target dataset's class embeddings.
        top_k: tuple of int. Defaults to (1, 5).
    """

    def __init__(self, class_matrix, top_k=(1, 5)):
        self.class_matrix = np.asarray(class_matrix)
        self.top_k = tuple(top_k)
        self.reset()

    def reset(self):
        self._features, self._videos, self._labels = [], [], []

    def update(self, features, video_index, labels):
        """Adds (N, D) features with (N,) video indices and labels."""
        self._features.append(np.asarray(features))
        self._videos.append(np.asarray(video_index).reshape(-1))
        self._labels.append(np.asarray(labels).reshape(-1))

    def _arrays(self):
        if not self._features:
            raise ValueError("No batch was added: call `update` first.")
        return (
            np.concatenate(self._features),
            np.concatenate(self._videos),
            np.concatenate(self._labels),
        )

    def result(self):
        """`zero_shot_accuracy` on everything added so far."""
        return zero_shot_accuracy(*self._arrays(), self.class_matrix, self.top_k)

    def result_splits(self, num_splits=10, fraction=0.5, seed=0):
        """`zero_shot_splits` on everything added so far."""
        return zero_shot_splits(
            *self._arrays(), self.class_matrix, num_splits, fraction, seed, self.top_k
        )


def filter_overlapping_classes(train_matrix, target_matrix, tau):
    """Which training classes are at cosine distance >= tau from all targets.

    Cosine distance is 1 - cos, computed in float64 on L2-normalised rows and
    clipped to [0, 2]. A
    training class is kept iff its distance to every target class is >= tau
    (equality keeps it).

    Args:
        train_matrix: float (C_train, D).
        target_matrix: float (C_target, D), all target datasets stacked.
        tau: float. Threshold.

    Returns:
        (keep bool (C_train,), nearest target index int (C_train,),
         distance to it float64 (C_train,)).
    """
    # Rounding can push the cosine of identical rows past 1; clip so that
    # identical names sit at distance 0 and tau=0 keeps every class.
    distances = np.clip(1.0 - cosine_scores(train_matrix, target_matrix), 0.0, 2.0)
    nearest = np.argmin(distances, axis=1)
    nearest_distance = distances[np.arange(len(nearest)), nearest]
    return nearest_distance >= tau, nearest, nearest_distance


def remap_labels(keep):
    """Old class index -> new index, or -1 for a dropped class.

    Args:
        keep: bool (C,).

    Returns:
        int64 (C,): kept classes renumbered 0.. in their old order.
    """
    keep = np.asarray(keep, dtype=bool)
    new = np.full(keep.shape, -1, dtype=np.int64)
    new[keep] = np.arange(int(keep.sum()))
    return new
