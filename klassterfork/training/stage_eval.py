"""Multi-view evaluation of a stage's model: the traced predict functions,
one validation set's scores and metrics, and its predictions file.

`Stage.evaluate` (trainer.py) calls `evaluate_set` once per validation set;
the functions here take the model and the set's blocks as plain values.
"""

import logging

import numpy as np
import tensorflow as tf

from klassterfork.config.loader import ConfigError
from klassterfork.data import spec as data_spec
from klassterfork.data.reading import eval_pipeline
from klassterfork.evaluation import aggregate
from klassterfork.evaluation.predictions import write_predictions

LOG = logging.getLogger(__name__)


class EvaluationInterrupted(Exception):
    """`should_stop` said yes between two batches (a SIGTERM / SIGINT): the
    evaluation stopped there, its metrics are not complete."""


def make_predict_fn(model, *, zero_shot, chunked):
    """The traced predict function of `model` for one evaluation mode.

    Args:
        model: keras.Model. (N, T, H, W, C) clips -> (N, D).
        zero_shot: bool. D is raw features (an embedding model), not logits.
        chunked: bool. The set is read in chunks of views
            (`views_per_chunk`).

    Returns:
        Unchunked: (B, V, T, H, W, C) -> (B, D), the views' mean: softmax
        scores, or L2-normalized features when `zero_shot`. Chunked:
        (B, K, T, H, W, C) -> (B, K, D) per-view outputs, averaged per video
        by `aggregate.ViewAccumulator`; the model then sees at most B * K
        clips per call.
    """

    def view_outputs(clips):
        # Views folded into the batch: softmax scores for a classifier,
        # raw features for an embedding model -> (B, V, D).
        shape = tf.shape(clips)
        flat = tf.reshape(clips, tf.concat([[-1], shape[2:]], axis=0))
        outputs = tf.cast(model(flat, training=False), tf.float32)
        if not zero_shot:
            outputs = tf.nn.softmax(outputs, axis=-1)
        return tf.reshape(outputs, [shape[0], shape[1], -1])

    @tf.function(reduce_retracing=True)
    def predict(clips):
        # Averaged over views; L2-normalized features for an embedding
        # model (the zero-shot recipe's clip averaging).
        mean = tf.reduce_mean(view_outputs(clips), axis=1)
        return tf.math.l2_normalize(mean, axis=-1) if zero_shot else mean

    return tf.function(view_outputs, reduce_retracing=True) if chunked else predict


def evaluate_set(predict_fn, key, block, info, matrix, source, *, predictions_path=None,
                 bad_records=None, should_stop=None):
    """Scores one validation set; writes its predictions file if asked.

    Args:
        predict_fn: callable `(zero_shot, chunked) -> traced predict
            function` (`make_predict_fn` of the model, cached by the caller).
        key: str. The set's key under `datasets` (`val`, `val_<name>`).
        block: dict. The set's config block.
        info: the set's `builders.dataset_info`.
        matrix: float (C, E) class-name embeddings for a zero-shot set, or
            None for a classifier.
        source: config Source, for located errors.
        predictions_path: str or None. Where the predictions go (without
            extension); None writes nothing.
        bad_records: `bad_records.BadRecordLog` or None. A record that does
            not parse or decode is skipped (the rest of its batch is
            scored), named in the log (with `set` = `key`) and counted in
            `skipped`. None: a bad record raises, as before.
        should_stop: callable `() -> bool` or None, asked between batches
            (e.g. "a SIGTERM arrived"): yes raises `EvaluationInterrupted`.

    Returns:
        dict: `top1`, `top5` over the labelled videos (NaN when none),
        `videos` (all scored), `labelled` (the top-1/top-5 denominator:
        unlabelled videos are left out), and `loss` (mean cross-entropy of
        the averaged softmax scores) for a classifier. With C < 5 classes
        `top5` is top-C (every video a hit): logged once per call. With
        `bad_records`, `skipped`: the videos left out as bad records.

    Raises:
        EvaluationInterrupted: `should_stop()` was true between batches.
    """
    spec, dataset = _eval_data(block, info, source, key, skip=bad_records is not None)
    stop = should_stop or (lambda: False)
    seen = set()
    if block.get("views_per_chunk") is not None:
        num_views = int(block["num_clips"]) * int(block["num_crops"])
        predict = predict_fn(zero_shot=matrix is not None, chunked=True)
        ids, scores, labels = predict_chunked(predict, dataset, num_views, matrix,
                                              should_stop=stop, seen=seen)
    else:
        predict = predict_fn(zero_shot=matrix is not None, chunked=False)
        ids, scores, labels = predict_unchunked(predict, dataset, matrix,
                                                should_stop=stop, seen=seen)
    scored = score_metrics(scores, labels, with_loss=matrix is None)
    labelled = int(np.sum(labels >= 0))
    metrics = {"top1": scored["top1"], "top5": scored["top5"], "videos": int(len(ids)),
               "labelled": labelled, **scored}
    if bad_records is not None:
        metrics["skipped"] = _name_skipped(info.files, spec, seen, key, bad_records)
    if len(ids) and scores.shape[1] < 5:
        LOG.warning(top5_note(scores.shape[1], f"datasets.{key}"))
    if labelled < len(ids):
        LOG.warning("datasets.%s: %d of %d videos are unlabelled: top1/top5 are over "
                    "the %d labelled ones", key, len(ids) - labelled, len(ids), labelled)
    if predictions_path:
        names = info.label_names or [str(i) for i in range(scores.shape[1])]
        write_predictions(predictions_path, ids, scores, labels, names)
    return metrics


def top5_note(num_classes, where):
    """The line that says top5 is top-C (C < 5 classes: every video a hit)."""
    return (f"{where}: top5 is top-{num_classes}: the dataset has {num_classes} "
            f"classes (every labelled video counts as a top-5 hit)")


def score_metrics(scores, labels, *, with_loss):
    """top1 / top5 (and the loss of probability scores) of the labelled rows.

    Args:
        scores: float (N, C). Higher is more likely; probabilities when
            `with_loss`.
        labels: int (N,). -1 for an unlabelled video (left out).
        with_loss: bool. Also report `loss`, -mean log p(label).

    Returns:
        dict of floats; NaN when no row is labelled. Ties rank the lower
        class index first. With C < 5 classes `top5` is top-C (1.0): the
        caller names it (`top5_note`).
    """
    labelled = labels >= 0
    s, y = scores[labelled], labels[labelled]
    nan = float("nan")
    order = np.argsort(-s, axis=1, kind="stable")
    metrics = {
        "top1": float(np.mean(order[:, 0] == y)) if len(y) else nan,
        "top5": float(np.mean((order[:, :5] == y[:, None]).any(axis=1))) if len(y) else nan,
    }
    if with_loss:
        picked = s[np.arange(len(y)), y]
        metrics["loss"] = float(-np.mean(np.log(np.maximum(picked, 1e-12)))) if len(y) else nan
    return metrics


def _eval_data(block, info, source, key, *, skip):
    """(spec, dataset) of a validation set; `skip`: bad records are dropped
    and the positions come out (`eval_pipeline.eval_dataset`)."""
    where = f"datasets.{key}"
    spec = data_spec.EvalData.from_block(block, source, where)
    try:
        return spec, eval_pipeline.eval_dataset(info.files, spec, with_ids=True,
                                                skip_bad_records=skip)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, where, str(err)) from None


def _name_skipped(files, spec, seen, key, bad_records):
    """Names the records missing from `seen` in `bad_records`; their count."""
    found = eval_pipeline.missing_records(files, spec, seen, dataset_key=key)
    bad_records.add(found)
    if found:
        LOG.warning("datasets.%s: %d bad record(s) skipped; the metrics are over the "
                    "other videos (listed in %s)", key, len(found),
                    bad_records.path or "the bad-record log")
    return len(found)


def _check_stop(should_stop):
    if should_stop():
        raise EvaluationInterrupted("evaluation stopped between two batches")


def predict_unchunked(predict, dataset, matrix, *, should_stop, seen):
    """(ids, scores (N, C), labels (N,)) of an unchunked eval dataset; the
    record positions of a bad-record-tolerant dataset go into `seen`."""
    ids, scores, labels = [], [], []
    for clips, batch_labels, batch_ids, *positions in dataset:
        _check_stop(should_stop)
        out = predict(clips).numpy()
        scores.append(out if matrix is None else out @ matrix.T)
        labels.append(batch_labels.numpy())
        ids.extend(x.decode("utf-8") for x in batch_ids.numpy())
        if positions:
            seen.update(int(p) for p in positions[0].numpy())
    if not scores:
        return [], np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return ids, np.concatenate(scores), np.concatenate(labels).astype(np.int64)


def predict_chunked(predict, dataset, num_views, matrix, *, should_stop=None, seen=None):
    """(ids, scores (N, C), labels (N,)) of a chunked eval dataset; the
    videos' positions go into `seen` (a set) when given."""
    accumulator = aggregate.ViewAccumulator(num_views)
    for clips, batch_labels, batch_ids, chunks in dataset:
        _check_stop(should_stop or (lambda: False))
        if seen is not None:
            seen.update(int(p) for p in chunks["video_index"].numpy())
        accumulator.add(
            chunks["video_index"].numpy(), predict(clips).numpy(),
            chunks["view_mask"].numpy(), batch_labels.numpy(),
            [x.decode("utf-8") for x in batch_ids.numpy()],
        )
    scores, labels, ids = accumulator.result()
    if labels is None:  # no videos
        return [], np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    if matrix is not None:  # as tf.math.l2_normalize, then cosines
        sum_sq = np.sum(scores * scores, axis=-1, keepdims=True)
        scores = (scores / np.sqrt(np.maximum(sum_sq, 1e-12))) @ matrix.T
    return ids, scores.astype(np.float32), labels

