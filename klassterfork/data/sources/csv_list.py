"""Generic CSV list for custom datasets: `path,label` rows.

    path,label                  <- optional header
    cats/clip1.mp4,cat
    dogs/clip7.mp4,dog
    clip9.mp4,                  <- empty label: an unlabelled video

Labels are class names, or class indices when a label map is given (or when
every label is an integer). Without a label map, names sorted alphabetically
are the classes; integer labels give classes "0".."N-1". Paths are relative
to `videos` when given, else to the CSV's folder. The id is the path without
its extension (unique even when two folders hold `clip1.mp4`).
"""

import csv
import os

from klassterfork.data.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.sources.json_list import load_label_names, split_existing

_HEADER = ("path", "label")


def _is_int(text):
    return text.lstrip("-").isdigit()


def _rows(path):
    """(line number, path, label) per data row; the header is skipped."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = [(n, row) for n, row in enumerate(csv.reader(f), 1)]
    rows = []
    for n, row in lines:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if not rows and tuple(c.lower() for c in cells[:2]) in (_HEADER, _HEADER[:1]):
            continue  # header
        if len(cells) > 2:
            raise ValueError(
                f"{path}:{n}: a row must be `path,label` (2 columns). "
                f"Received {len(cells)} columns: {row!r}"
            )
        rows.append((n, cells[0], cells[1] if len(cells) > 1 else ""))
    return rows


@SOURCES.register("csv")
def read(*, annotations, videos=None, split=None, label_map=None):
    """Reads a `path,label` CSV (see the module docstring).

    Args:
        annotations: str. The CSV file.
        videos: str or None. Folder the relative paths are under. Defaults
            to the CSV's folder.
        split: str or None. Unused: one CSV is one split.
        label_map: str or None. Class list (one name per line, or
            `index,name` lines as in `labels.txt`); labels may then be names
            or indices.

    Returns:
        Annotation; videos not on disk go to `missing`.

    Raises:
        ValueError: a row with more than 2 columns, an empty path, an unknown
            class name or an index out of range (naming file and line).
    """
    del split
    rows = _rows(annotations)
    base = videos if videos is not None else os.path.dirname(os.path.abspath(annotations))
    labels = [label for _, _, label in rows if label]
    if label_map is not None:
        names = load_label_names(label_map)
    elif labels and all(_is_int(v) for v in labels):
        names = [str(i) for i in range(max(int(v) for v in labels) + 1)]
    else:
        names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    entries = []
    for n, path, label in rows:
        where = f"{annotations}:{n}"
        if not path:
            raise ValueError(f"{where}: the path is empty.")
        if not label:
            ids = ()
        elif label in index:
            ids = (index[label],)
        elif _is_int(label) and 0 <= int(label) < len(names):
            ids = (int(label),)
        else:
            raise ValueError(
                f"{where}: unknown label {label!r}. Accepted: a class name of "
                f"the {len(names)} classes, or an index in [0, {len(names)})."
            )
        entries.append(
            VideoEntry(
                video_id=os.path.splitext(path)[0],
                path=path if os.path.isabs(path) else os.path.join(base, path),
                labels=ids,
                label_text=";".join(names[i] for i in ids),
            )
        )
    found, missing = split_existing(entries)
    return Annotation(entries=found, label_names=names, missing=missing)
