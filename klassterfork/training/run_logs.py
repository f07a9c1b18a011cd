"""A stage's CSV logs (`log_steps.csv`, `log.csv`) and their TensorBoard
scalars: appended a row at a time, cut back to a restored step on resume,
and read back for the best metric so far."""

import csv
import io

import numpy as np
import tensorflow as tf

from klassterfork import files
from klassterfork.files import atomic_write

STEP_CSV_FIELDS = ("step", "epoch", "loss", "lr", "clips_per_s")
TRAIN_CSV_FIELDS = ("epoch", "step", "loss", "top1", "top5", "lr", "clips_per_s")


def truncate_rows(paths, step, log):
    """Drops CSV rows past the restored `step` (written after the
    checkpoint by the interrupted run), so a resumed run logs no step
    twice."""
    for path in paths:
        if not files.exists(path):
            continue
        with files.open_file(path) as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) == len(rows):
            continue
        with atomic_write(path) as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(kept)
        log(f"{path}: removed {len(rows) - len(kept)} row(s) past step {step} "
            "(logged after the checkpoint the run resumes from)")


def append_step(path, row, writer):
    """One row of `log_steps.csv` and its scalars."""
    _append_row(path, STEP_CSV_FIELDS, row)
    with writer.as_default(step=row["step"]):
        tf.summary.scalar("train/loss_step", row["loss"])
        tf.summary.scalar("train/lr", row["lr"])
        tf.summary.scalar("train/clips_per_s", row["clips_per_s"])


def append_epoch(path, fields, metrics, writer):
    """One epoch row of `log.csv` (the `fields` columns) and its scalars."""
    _append_row(path, fields, {k: metrics.get(k, "") for k in fields})
    with writer.as_default(step=metrics["step"]):
        for k, v in metrics.items():
            if not (k in ("epoch", "step") or k.endswith("videos")):
                tf.summary.scalar(k if k.startswith("val") else "train/" + k, v)
    writer.flush()


def best_logged(csv_path, key, up_to_step):
    """The best signed `key` (higher is better; losses negated) of the epoch
    rows of `csv_path` at steps <= `up_to_step`; -inf when there is none."""
    sign = -1.0 if key.endswith("loss") else 1.0
    best = -np.inf
    try:
        with files.open_file(csv_path) as f:
            for row in csv.DictReader(f):
                try:
                    step, value = int(row["step"]), float(row[key])
                except (KeyError, TypeError, ValueError):
                    continue  # a row without that metric (no evaluation then)
                if step <= up_to_step and np.isfinite(value):
                    best = max(best, sign * value)
    except FileNotFoundError:
        pass
    return best


def _append_row(path, fields, row):
    """One CSV row (the header first in a new file), through files.py: a
    local append, a rewrite on a remote store."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    if not files.exists(path):
        w.writeheader()
    w.writerow(row)
    files.append_text(path, text.getvalue())


def format_metrics(metrics):
    parts = []
    for k, v in metrics.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
