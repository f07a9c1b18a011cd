"""Video-level classification metrics in numpy.

Conventions shared by every function here:

* `scores` is float (N, C): one row per video (logits, probabilities or any
  monotone score; only the order within a row matters, except for `mAP`,
  which ranks videos per class).
* `labels` is either int (N,) (one class per video) or int (N, L) padded with
  -1 (multi-label, as `video/label` is an int64 list in the records). Every
  video must have at least one label; -1 entries are padding.
* **Ties.** Classes are ranked with a stable sort on the descending score, so
  among equal scores the *lower class index ranks first*; top-1 is therefore
  `np.argmax` (which also returns the first maximum). For `mAP`, videos with
  equal scores for a class are ranked by lower video index first. This is
  deterministic and documented rather than optimistic or pessimistic.
* **Classes with no samples** are excluded from `mean_class_accuracy` and
  `mAP` (their recall / AP is undefined); `per_class_precision_recall` returns
  NaN for them (and NaN precision for classes never predicted).
"""

import logging

import numpy as np

LOG = logging.getLogger(__name__)


def _check_scores(scores):
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(
            "`scores` must be a float array of shape (N, C) with C >= 1. "
            f"Received: scores.shape={scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number):
        raise ValueError(
            f"`scores` must be numeric. Received: scores.dtype={scores.dtype}"
        )
    return scores.astype(np.float64)


def label_matrix(labels, num_classes, num_videos=None):
    """Turns labels into a boolean target matrix.

    Args:
        labels: int (N,) or int (N, L) padded with -1.
        num_classes: int. C.
        num_videos: int or None. Expected N, checked when given.

    Returns:
        bool (N, C); row n is True at the labels of video n.

    Raises:
        ValueError: on a label outside [0, C), a video without any label, or
            a length that differs from `num_videos`.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or not (
        labels.size == 0 or np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError(
            "`labels` must be int (N,) or int (N, L) padded with -1. "
            f"Received: labels.shape={labels.shape}, dtype={labels.dtype}"
        )
    if num_videos is not None and labels.shape[0] != num_videos:
        raise ValueError(
            "`labels` and `scores` must have the same number of videos. "
            f"Received: {labels.shape[0]} labels for {num_videos} score rows"
        )
    bad = (labels >= num_classes) | (labels < -1)
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"labels must lie in [0, {num_classes}) (or be -1 padding). "
            f"Received: labels[{n}]={labels[n].tolist()}"
        )
    has_label = (labels >= 0).any(axis=1)
    if not has_label.all():
        n = int(np.argmin(has_label))
        raise ValueError(
            "Every evaluated video needs a label; unlabelled (test) videos "
            "can only go to a submission file. Received: no label for "
            f"video index {n}"
        )
    target = np.zeros((labels.shape[0], num_classes), dtype=bool)
    rows, cols = np.nonzero(labels >= 0)
    target[rows, labels[rows, cols]] = True
    return target


def top_k_indices(scores, k):
    """The k best classes per video, best first, ties to the lower index.

    Args:
        scores: float (N, C).
        k: int. Clipped to C.

    Returns:
        int64 (N, min(k, C)).
    """
    scores = _check_scores(scores)
    if k < 1:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, : min(k, scores.shape[1])]


def _hits(scores, labels, k):
    """bool (N, C): class c is a label of video n and ranks in its top k."""
    scores = _check_scores(scores)
    target = label_matrix(labels, scores.shape[1], scores.shape[0])
    in_top = np.zeros_like(target)
    top = top_k_indices(scores, k)
    np.put_along_axis(in_top, top, True, axis=1)
    return target, in_top & target


def top_k_accuracy(scores, labels, k=1):
    """Fraction of videos with a true label among their k best classes.

    With multi-label rows this is ActivityNet's hit@k. Ties: see module doc.

    Args:
        scores: float (N, C).
        labels: int (N,) or (N, L) padded with -1.
        k: int. Defaults to 1.

    Returns:
        float in [0, 1].
    """
    _, hits = _hits(scores, labels, k)
    return float(hits.any(axis=1).mean())


hit_at_k = top_k_accuracy


def mean_class_accuracy(scores, labels, k=1):
    """Mean over classes of the per-class top-k recall.

    Per class c: among videos labelled c, the fraction with c in the top k.
    Classes without samples are excluded from the mean.

    Returns:
        float in [0, 1].
    """
    target, hits = _hits(scores, labels, k)
    support = target.sum(axis=0)
    present = support > 0
    return float((hits.sum(axis=0)[present] / support[present]).mean())


def confusion_matrix(labels, predictions, num_classes):
    """Counts of (true class, predicted class) pairs.

    A multi-label video adds one count per true label.

    Args:
        labels: int (N,) or (N, L) padded with -1.
        predictions: int (N,). Predicted class per video (top-1).
        num_classes: int. C.

    Returns:
        int64 (C, C); rows are true classes, columns predicted classes.
    """
    predictions = np.asarray(predictions)
    target = label_matrix(labels, num_classes, predictions.shape[0])
    if predictions.ndim != 1 or (
        (predictions < 0) | (predictions >= num_classes)
    ).any():
        raise ValueError(
            f"`predictions` must be int (N,) in [0, {num_classes}). "
            f"Received: shape={predictions.shape}"
        )
    rows, cols = np.nonzero(target)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (cols, predictions[rows]), 1)
    return cm


def per_class_precision_recall(scores, labels):
    """Per-class precision and recall of the top-1 prediction.

    precision_c = correct_c / predicted_c (NaN when c is never predicted);
    recall_c = correct_c / support_c (NaN when c has no samples); a top-1
    prediction is correct when it is one of the video's labels.

    Returns:
        dict of (C,) arrays: `precision`, `recall` (float64), `support`,
        `predicted`, `correct` (int64).
    """
    scores = _check_scores(scores)
    target = label_matrix(labels, scores.shape[1], scores.shape[0])
    pred = top_k_indices(scores, 1)[:, 0]
    num_classes = scores.shape[1]
    predicted = np.bincount(pred, minlength=num_classes)
    is_correct = target[np.arange(len(pred)), pred]
    correct = np.bincount(pred[is_correct], minlength=num_classes)
    support = target.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / predicted, np.nan)
        recall = np.where(support > 0, correct / support, np.nan)
    return {
        "precision": precision,
        "recall": recall,
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "correct": correct.astype(np.int64),
    }


def interpolated_average_precision(ranked_positive):
    """ActivityNet / VOC all-point interpolated AP of one ranked list.

    AP = sum_i (r_i - r_{i-1}) * max_{j >= i} p_j over the ranks where recall
    changes, p and r being precision and recall at each rank.

    Args:
        ranked_positive: bool (M,). Whether the item at each rank is positive.

    Returns:
        float in [0, 1]; NaN when there is no positive.
    """
    ranked_positive = np.asarray(ranked_positive, dtype=bool)
    num_pos = ranked_positive.sum()
    if num_pos == 0:
        return float("nan")
    tp = np.cumsum(ranked_positive)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_pos
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def mean_average_precision(scores, labels):
    """ActivityNet-style classification mAP.

    For each class, videos are ranked by that class's score (ties: lower video
    index first) and the interpolated AP is computed with the videos labelled
    with the class as positives; mAP is the mean over classes with at least
    one positive.

    Returns:
        float in [0, 1].
    """
    scores = _check_scores(scores)
    target = label_matrix(labels, scores.shape[1], scores.shape[0])
    aps = []
    for c in np.nonzero(target.any(axis=0))[0]:
        order = np.argsort(-scores[:, c], kind="stable")
        aps.append(interpolated_average_precision(target[order, c]))
    return float(np.mean(aps))


def activitynet_metrics(scores, labels):
    """hit@1, hit@5, mAP and AVG hit = (hit@1 + hit@5) / 2.

    The Kinetics challenge "mean error" is 1 - AVG hit.

    Returns:
        dict with `hit@1`, `hit@5`, `mAP`, `avg_hit`, `mean_error` (floats).
    """
    hit1 = top_k_accuracy(scores, labels, 1)
    hit5 = top_k_accuracy(scores, labels, 5)
    avg_hit = (hit1 + hit5) / 2
    return {
        "hit@1": hit1,
        "hit@5": hit5,
        "mAP": mean_average_precision(scores, labels),
        "avg_hit": avg_hit,
        "mean_error": 1.0 - avg_hit,
    }


def summary(scores, labels):
    """Every headline metric of one score matrix, as a JSON-ready dict.

    Returns:
        dict with `num_videos`, `num_classes`, `num_classes_with_samples`,
        `top1`, `top5`, `mean_class_accuracy`, `mean_class_top5` and the
        entries of `activitynet_metrics`. With C < 5 classes the top-5
        metrics are top-C (every video a hit), reported as such (the
        dict's `top5_is_top` is C) and logged once per call.
    """
    scores = _check_scores(scores)
    if scores.shape[1] < 5:
        LOG.warning("top5 is top-%d: the dataset has %d classes (every video counts "
                    "as a top-5 hit)", scores.shape[1], scores.shape[1])
    target = label_matrix(labels, scores.shape[1], scores.shape[0])
    out = {
        "num_videos": int(scores.shape[0]),
        "num_classes": int(scores.shape[1]),
        "num_classes_with_samples": int(target.any(axis=0).sum()),
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(scores, labels, 1),
        "mean_class_top5": mean_class_accuracy(scores, labels, 5),
        "top5_is_top": min(5, int(scores.shape[1])),
    }
    out.update(activitynet_metrics(scores, labels))
    return out
