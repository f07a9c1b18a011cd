"""Video-level scores from view, clip or frame scores, and late fusion.

* Multi-view (clips x crops) models: the video score is the average of the
  softmax of each view's logits (SlowFast / mmaction2 "average_clips=prob").
* Frame-level models (two-stream 2D CNNs): the score of class c is the mean of
  its k largest frame logits, k in {10, 30, 50}, clipped to the number of
  frames (Karpathy et al. / "top-k pooling").
* Two-stream late fusion: weighted average of the streams' video scores.
* Chunked views (`pipeline.eval_dataset(views_per_chunk=K)`): per-video
  running sums over the unmasked views (`ViewAccumulator`).
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


class ViewAccumulator:
    """Per-video mean of view scores that arrive in chunks (streaming).

    The consumer of `pipeline.eval_dataset(..., views_per_chunk=K)`: each
    batch row is a chunk of K views of one video, padding views masked out.
    Only one running sum per video is kept, never the view scores, so the
    memory is (N, C) whatever the number of views.

    Args:
        num_views: int or None. V; when given, `result` checks that every
            video received exactly V views. Defaults to None.
    """

    def __init__(self, num_views=None):
        self.num_views = num_views
        self._sums, self._counts, self._labels, self._ids = {}, {}, {}, {}

    def add(self, video_index, scores, view_mask, labels=None, ids=None):
        """Adds one batch of chunks.

        Args:
            video_index: int (B,). The video of each chunk.
            scores: float (B, K, C). Per-view scores (probabilities, or
                features; averaged as given).
            view_mask: bool (B, K). False for padding views (ignored, even
                when their scores are NaN).
            labels: int (B,) or None. The chunk's video label.
            ids: sequence of B str/bytes or None. The chunk's video id.

        Raises:
            ValueError: on a shape mismatch, or a video whose chunks
                disagree on its label or id.
        """
        scores = np.asarray(scores, dtype=np.float64)
        mask = np.asarray(view_mask, dtype=bool)
        video_index = np.asarray(video_index).reshape(-1)
        if scores.ndim != 3 or mask.shape != scores.shape[:2] or (
            video_index.shape != scores.shape[:1]
        ):
            raise ValueError(
                "`scores` must be (B, K, C), `view_mask` (B, K) and "
                "`video_index` (B,). Received: "
                f"scores.shape={scores.shape}, view_mask.shape={mask.shape}, "
                f"video_index.shape={video_index.shape}"
            )
        video_index = video_index.tolist()
        # Check labels and ids first, so a bad batch adds nothing.
        for store, values, name in ((self._labels, labels, "label"),
                                    (self._ids, ids, "id")):
            if values is None:
                continue
            seen = {}
            for video, value in zip(video_index, values):
                value = value.item() if hasattr(value, "item") else value
                known = seen.setdefault(video, store.get(video, value))
                if known != value:
                    raise ValueError(
                        f"The chunks of video {video} disagree on its {name}: "
                        f"{known!r} and {value!r}"
                    )
            store.update(seen)
        sums = np.where(mask[..., None], scores, 0.0).sum(axis=1)
        counts = mask.sum(axis=1)
        for b, video in enumerate(video_index):
            if video in self._sums:
                self._sums[video] += sums[b]
                self._counts[video] += int(counts[b])
            else:
                self._sums[video] = sums[b].copy()
                self._counts[video] = int(counts[b])

    def result(self):
        """The per-video means, in video-index order.

        Returns:
            (scores float64 (N, C), labels int64 (N,) or None, ids list or
            None); labels / ids are None when `add` never got them.

        Raises:
            ValueError: when a video got a number of views other than
                `num_views`, or none at all.
        """
        order = sorted(self._sums)
        counts = np.array([self._counts[v] for v in order], dtype=np.int64)
        wrong = [v for v, c in zip(order, counts)
                 if c == 0 or (self.num_views is not None and c != self.num_views)]
        if wrong:
            raise ValueError(
                f"Every video needs {self.num_views or '>= 1'} views. Received: "
                f"videos {wrong[:10]} with {counts[order.index(wrong[0])]} "
                "(first shown)"
            )
        if not order:
            return np.zeros((0, 0)), None, None
        scores = np.stack([self._sums[v] for v in order]) / counts[:, None]
        labels = (np.array([self._labels[v] for v in order], dtype=np.int64)
                  if self._labels else None)
        ids = [self._ids[v] for v in order] if self._ids else None
        return scores, labels, ids


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
