"""Video-level scores from view, clip or frame scores, and late fusion.

* Multi-view (clips x crops) models: the video score is the average of the
  softmax of each view's logits (SlowFast / mmaction2 "average_clips=prob").
* Frame-level models (two-stream 2D CNNs): the score of class c is the mean of
  its k largest frame logits, k in {10, 30, 50}, clipped to the number of
  frames (Karpathy et al. / "top-k pooling").
* Two-stream late fusion: weighted average of the streams' video scores.
"""

import numpy as np


def softmax(logits, axis=-1):
    """Numerically stable softmax.

    Args:
        logits: float array (..., C).
        axis: int. Axis of the classes. Defaults to -1.

    Returns:
        float64 array of the same shape, summing to 1 along `axis`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def average_views(scores, video_index=None, *, num_videos=None,
                  apply_softmax=True):
    """Averages views (clips x crops) into one score row per video.

    Args:
        scores: float (B, V, C) logits of V views per video, or (M, C)
            flattened views together with `video_index`.
        video_index: int (M,) or None. Video of each flattened view row.
        num_videos: int or None. Number of videos N for the flattened form;
            defaults to max(video_index) + 1.
        apply_softmax: bool. Softmax each view before averaging (the scores
            are logits). Defaults to True.

    Returns:
        float64 (B, C) or (N, C): mean over views of the (softmaxed) scores.

    Raises:
        ValueError: on a shape mismatch or a video without any view.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if video_index is None:
        if scores.ndim != 3 or scores.shape[1] == 0:
            raise ValueError(
                "`scores` must be (B, V, C) with V >= 1 when `video_index` "
                f"is None. Received: scores.shape={scores.shape}"
            )
        probs = softmax(scores) if apply_softmax else scores
        return probs.mean(axis=1)
    video_index = np.asarray(video_index)
    if scores.ndim != 2 or video_index.shape != (scores.shape[0],):
        raise ValueError(
            "Flattened views need `scores` (M, C) and `video_index` (M,). "
            f"Received: scores.shape={scores.shape}, "
            f"video_index.shape={video_index.shape}"
        )
    if video_index.size and video_index.min() < 0:
        raise ValueError(
            "`video_index` must be >= 0. Received: "
            f"min(video_index)={video_index.min()}"
        )
    if num_videos is None:
        num_videos = int(video_index.max()) + 1 if video_index.size else 0
    counts = np.bincount(video_index, minlength=num_videos)
    if len(counts) > num_videos or (counts == 0).any():
        missing = np.nonzero(counts[:num_videos] == 0)[0]
        raise ValueError(
            f"Every one of the {num_videos} videos needs >= 1 view in range. "
            f"Received: videos without views {missing[:10].tolist()}, "
            f"max(video_index)={video_index.max()}"
        )
    probs = softmax(scores) if apply_softmax else scores
    sums = np.zeros((num_videos, scores.shape[1]))
    np.add.at(sums, video_index, probs)
    return sums / counts[:, None]


def top_k_frame_pooling(frame_logits, k):
    """Class score = mean of its k largest frame logits.

    Args:
        frame_logits: float (T, C) for one video, (N, T, C) for a batch with
            equal T, or a list of (T_n, C) arrays of different lengths.
        k: int >= 1. Clipped to the number of frames of each video.

    Returns:
        float64 (C,) for a (T, C) input, else (N, C).
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    if isinstance(frame_logits, (list, tuple)):
        return np.stack([top_k_frame_pooling(f, k) for f in frame_logits])
    x = np.asarray(frame_logits, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[-2] == 0:
        raise ValueError(
            "`frame_logits` must be (T, C) or (N, T, C) with T >= 1. "
            f"Received: shape={x.shape}"
        )
    kk = min(k, x.shape[-2])
    top = np.sort(x, axis=-2)[..., -kk:, :]
    return top.mean(axis=-2)


def fuse_streams(streams, weights=None):
    """Late fusion: weighted average of per-stream video scores.

    TSN fuses RGB and flow with weights 1 : 1.5. Weights are normalized to
    sum to 1 (this does not change the argmax, and keeps probabilities
    probabilities).

    Args:
        streams: list of float (N, C) arrays, rows aligned across streams.
        weights: list of floats >= 0 (one per stream, positive sum) or None
            for equal weights.

    Returns:
        float64 (N, C).
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in streams]
    if not arrays or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(
            "`streams` must be a non-empty list of equal-shape (N, C) arrays. "
            f"Received shapes: {[a.shape for a in arrays]}"
        )
    weights = np.ones(len(arrays)) if weights is None else np.asarray(
        weights, dtype=np.float64)
    if weights.shape != (len(arrays),) or (weights < 0).any() or (
        weights.sum() <= 0
    ):
        raise ValueError(
            f"`weights` must be {len(arrays)} non-negative numbers with a "
            f"positive sum. Received: weights={weights.tolist()}"
        )
    weights = weights / weights.sum()
    return sum(w * a for w, a in zip(weights, arrays))


def align_by_id(ids_a, ids_b):
    """Row indices that put stream b in the order of stream a.

    Args:
        ids_a, ids_b: sequences of video ids (same set, any order).

    Returns:
        int64 (N,) `perm` with ids_b[perm] == ids_a.

    Raises:
        ValueError: naming ids missing from either side, or duplicates.
    """
    ids_a, ids_b = [str(i) for i in ids_a], [str(i) for i in ids_b]
    pos = {i: n for n, i in enumerate(ids_b)}
    if len(pos) != len(ids_b) or len(set(ids_a)) != len(ids_a):
        raise ValueError("Video ids must be unique within each score file.")
    only_a = [i for i in ids_a if i not in pos]
    only_b = sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(
            "The two score files must hold the same videos. Received: "
            f"{len(only_a)} ids only in the first (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in the second (e.g. {only_b[:3]})"
        )
    return np.array([pos[i] for i in ids_a], dtype=np.int64)
