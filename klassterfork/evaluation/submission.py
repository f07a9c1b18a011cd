"""Something-Something-v2 test submission file.

One line per test video: `id;c1;c2;c3;c4;c5`, the five best class indices,
best first (ties: lower class index first, as in `metrics.top_k_indices`).
"""

from pathlib import Path

import numpy as np

from klassterfork.evaluation.metrics import top_k_indices
from klassterfork.evaluation.predictions import video_id_str
from klassterfork.files import atomic_write, is_remote, open_file


def write_submission(path, ids, scores, k=5):
    """Writes `id;c1;...;ck` lines, atomically.

    Args:
        path: str or Path. Output text file.
        ids: sequence of N video ids. Must not contain ';' or a newline.
        scores: float (N, C).
        k: int. Classes per line, clipped to C. Defaults to 5.

    Returns:
        Path written (str for a URL: `Path` would fold `gs://b` into `gs:/b`).
    """
    scores = np.asarray(scores)
    ids = [video_id_str(i) for i in ids]
    if scores.ndim != 2 or scores.shape[0] != len(ids):
        raise ValueError(
            "`scores` must be (len(ids), C). Received: "
            f"scores.shape={scores.shape}, {len(ids)} ids"
        )
    bad = [i for i in ids if ";" in i or "\n" in i or not i]
    if bad:
        raise ValueError(
            "Video ids must be non-empty and contain no ';' or newline. "
            f"Received: {bad[:3]}"
        )
    top = top_k_indices(scores, k)
    with atomic_write(path) as f:
        for vid, row in zip(ids, top):
            f.write(";".join([vid, *map(str, row)]) + "\n")
    return path if is_remote(path) else Path(path)


def read_submission(path):
    """Reads a submission file.

    Returns:
        (ids, classes): list of N str, int64 (N, k).

    Raises:
        ValueError: naming the file and line of a malformed row.
    """
    ids, rows = [], []
    with open_file(path) as f:  # a local path or a URL
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split(";")
            try:
                classes = [int(p) for p in parts[1:]]
            except ValueError:
                classes = []
            if not classes or (rows and len(classes) != len(rows[0])):
                raise ValueError(
                    f"{path}:{lineno}: expected 'id;c1;...;ck' with integer "
                    f"classes (k the same on every line). Received: {line!r}"
                )
            ids.append(parts[0])
            rows.append(classes)
    return ids, np.array(rows, dtype=np.int64).reshape(len(rows), -1)
