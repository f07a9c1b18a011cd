"""The per-video scores file: `<stem>.npz` (numbers) + `<stem>.json` (readable).

`<stem>.npz` holds, as the authoritative copy:
    ids          str (N,)       video ids
    scores       float32 (N, C) video-level scores (probabilities or logits)
    labels       int64 (N, L)   labels padded with -1; L = 0 when unlabelled
    class_names  str (C,)

`<stem>.json` repeats ids, labels and class names and lists each video's
top-5 classes with their scores, for people and other tools:
    {"format": "klassterfork.predictions/1", "scores_file": "<stem>.npz",
     "num_videos": N, "num_classes": C, "class_names": [...],
     "videos": [{"id": ..., "labels": [...], "top5": [[class, score], ...]}]}

Both files are written atomically (temporary name, then rename), npz first,
through `klassterfork.files`: a local path or a URL (`gs://`, `ram://`).
"""

import io
import json
import os
from pathlib import Path

import numpy as np

from klassterfork import files
from klassterfork.files import atomic_write, is_remote  # noqa: E402  (atomic_write re-exported)

FORMAT = "klassterfork.predictions/1"
_SUFFIXES = (".npz", ".json")




def video_id_str(video_id):
    """A video id as str: bytes (as parsed from records) are UTF-8 decoded."""
    if isinstance(video_id, bytes):
        return video_id.decode("utf-8")
    return str(video_id)


def _stem(path):
    path = Path(path)
    return path.with_suffix("") if path.suffix in _SUFFIXES else path


def _pair(path):
    """(npz, json) paths of `<stem>`: Paths, or strs for a remote path
    (`Path` would fold `gs://b` into `gs:/b`)."""
    if not is_remote(path):
        stem = _stem(path)
        return stem.with_suffix(".npz"), stem.with_suffix(".json")
    root, ext = os.path.splitext(str(path))
    stem = root if ext in _SUFFIXES else str(path)
    return stem + ".npz", stem + ".json"


def _pad_labels(labels, num_videos):
    """labels -> int64 (N, L) padded with -1 (L = 0 for None)."""
    if labels is None:
        return np.zeros((num_videos, 0), dtype=np.int64)
    if isinstance(labels, np.ndarray) and labels.ndim in (1, 2):
        arr = labels.astype(np.int64)
        arr = arr[:, None] if arr.ndim == 1 else arr
        rows = [r[r >= 0].tolist() for r in arr]
    else:
        rows = []
        for row in labels:
            row = np.atleast_1d(np.asarray(row, dtype=np.int64))
            rows.append(row[row >= 0].tolist())
    if len(rows) != num_videos:
        raise ValueError(
            "`labels` must have one entry per video. Received: "
            f"{len(rows)} labels for {num_videos} videos"
        )
    width = max((len(r) for r in rows), default=0)
    out = np.full((num_videos, width), -1, dtype=np.int64)
    for n, r in enumerate(rows):
        out[n, : len(r)] = r
    return out


def write_predictions(path, ids, scores, labels, class_names):
    """Writes the per-video scores file pair `<stem>.npz` + `<stem>.json`.

    Args:
        path: str or Path. `<stem>`, `<stem>.npz` or `<stem>.json`.
        ids: sequence of N video ids (str, bytes or int; stored as str).
        scores: float (N, C) video-level scores.
        labels: int (N,) (negative = no label), a length-N sequence of int
            lists (multi-label; empty = no label), int (N, L) padded with -1,
            or None for an unlabelled (test) split.
        class_names: sequence of C class names.

    Returns:
        (Path, Path): the npz and json files written.

    Raises:
        ValueError: when the lengths disagree or a label is out of range.
    """
    scores = np.asarray(scores, dtype=np.float32)
    ids = [video_id_str(i) for i in ids]
    class_names = [video_id_str(c) for c in class_names]
    if scores.ndim != 2 or scores.shape != (len(ids), len(class_names)):
        raise ValueError(
            "`scores` must be (len(ids), len(class_names)). Received: "
            f"scores.shape={scores.shape}, {len(ids)} ids, "
            f"{len(class_names)} class names"
        )
    padded = _pad_labels(labels, len(ids))
    if (padded >= len(class_names)).any():
        raise ValueError(
            f"labels must be < {len(class_names)} (number of class names). "
            f"Received: max label {padded.max()}"
        )
    npz_path, json_path = _pair(path)
    with atomic_write(npz_path, "wb") as f:
        np.savez(f, ids=np.array(ids, dtype=str), scores=scores,
                 labels=padded, class_names=np.array(class_names, dtype=str))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    videos = [
        {
            "id": vid,
            "labels": [int(x) for x in padded[n] if x >= 0],
            "top5": [[int(c), float(scores[n, c])] for c in top[n]],
        }
        for n, vid in enumerate(ids)
    ]
    doc = {
        "format": FORMAT,
        "scores_file": os.path.basename(str(npz_path)),
        "num_videos": len(ids),
        "num_classes": len(class_names),
        "class_names": class_names,
        "videos": videos,
    }
    with atomic_write(json_path) as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return npz_path, json_path


def read_predictions(path):
    """Reads a scores file written by `write_predictions`.

    Args:
        path: str or Path. `<stem>`, `<stem>.npz` or `<stem>.json`.

    Returns:
        dict with `ids` (list of str, N), `scores` (float32 (N, C)),
        `labels` (int64 (N, L) padded with -1, L = 0 when unlabelled),
        `class_names` (list of str, C) and `labelled` (bool: every video has
        at least one label).

    Raises:
        FileNotFoundError: naming the npz file when it is missing.
        ValueError: when the npz lacks a key or the shapes disagree.
    """
    npz_path = _pair(path)[0]
    if not files.exists(npz_path) or files.isdir(npz_path):
        raise FileNotFoundError(
            f"{npz_path}: no scores file (expected the .npz written by "
            "write_predictions next to the .json)"
        )
    source = npz_path
    if is_remote(npz_path):  # np.load seeks: read the (small) file whole
        with files.open_file(npz_path, "rb") as f:
            source = io.BytesIO(f.read())
    with np.load(source, allow_pickle=False) as data:
        missing = {"ids", "scores", "labels", "class_names"} - set(data.files)
        if missing:
            raise ValueError(
                f"{npz_path}: missing keys {sorted(missing)}; a scores file "
                "holds ids, scores, labels, class_names"
            )
        out = {
            "ids": [str(i) for i in data["ids"]],
            "scores": data["scores"].astype(np.float32),
            "labels": data["labels"].astype(np.int64),
            "class_names": [str(c) for c in data["class_names"]],
        }
    n, c = len(out["ids"]), len(out["class_names"])
    if out["labels"].ndim != 2 or out["labels"].shape[0] != n:
        raise ValueError(
            f"{npz_path}: labels has shape {out['labels'].shape}, expected "
            f"({n}, L) padded with -1"
        )
    if out["scores"].shape != (n, c):
        raise ValueError(
            f"{npz_path}: scores has shape {out['scores'].shape}, expected "
            f"({n}, {c}) from ids and class_names"
        )
    out["labelled"] = bool(n) and bool((out["labels"] >= 0).any(axis=1).all())
    return out


def read_class_names(path):
    """Reads a class list: one name per line (line index = class id), or an
    SSv2-style json `{name: "index"}`, or a json list of names.

    Returns:
        list of str, index = class id.

    Raises:
        ValueError: naming the file when the json indices are not 0..C-1.
    """
    with files.open_file(path) as f:  # a local path or a URL
        text = f.read()
    if os.path.splitext(os.fspath(path))[1] != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    doc = json.loads(text)
    if isinstance(doc, list):
        return [str(c) for c in doc]
    if not isinstance(doc, dict):
        raise ValueError(
            f"{path}: expected a json list of names or {{name: index}}. "
            f"Received: {type(doc).__name__}"
        )
    by_index = {int(v): k for k, v in doc.items()}
    if sorted(by_index) != list(range(len(doc))):
        raise ValueError(
            f"{path}: class indices must be 0..{len(doc) - 1} without gaps "
            "or duplicates"
        )
    return [by_index[i] for i in range(len(doc))]
