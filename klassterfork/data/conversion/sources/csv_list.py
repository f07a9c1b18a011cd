"""Generic CSV list for custom datasets: `path,label` rows.

    path,label                  <- optional header
    cats/clip1.mp4,cat
    dogs/clip7.mp4,dog
    clip9.mp4,                  <- empty label: an unlabelled video

Labels are all class names or all class indices (integers); a file that
mixes them (`2`, `10`, `cat`) is an error naming the first row that differs,
because sorting "10" before "2" as names would renumber classes silently.
Names index the label map (`label_map`, its line order), or without one the
names sorted alphabetically (`classes_from` says which). Indices keep their
value: classes "0".."max" without a label map, checked against it with one.
Paths are relative to `videos` when given, else to the CSV's folder. The id
is the path as written, extension included (unique even when two folders
hold `clip1.mp4`, or one folder `clip1.avi` and `clip1.mp4`).
"""

import csv
import os

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import (
    check_label_kinds,
    join_video_path,
    load_label_names,
    split_existing,
)

_HEADER = ("path", "label")


def _is_int(text):
    return text.lstrip("-").isdigit()


def _rows(path):
    """(line number, path, label) per data row; the header is skipped."""
    with fs.open_file(path, encoding="utf-8-sig") as f:
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
    if videos is not None:
        base = videos
    else:  # the folder of the list (absolute, so the stored paths are)
        base = fs.parent(annotations if fs.is_remote(annotations)
                         else os.path.abspath(annotations))
    labelled = [(n, label) for n, _, label in rows if label]
    indices = check_label_kinds(
        [(f"{annotations}:{n}", label) for n, label in labelled], _is_int)
    labels = [label for _, label in labelled]
    if label_map is not None:
        names = load_label_names(label_map)
    elif indices:
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
        elif indices and 0 <= int(label) < len(names):
            ids = (int(label),)
        elif not indices and label in index:
            ids = (index[label],)
        else:
            raise ValueError(
                f"{where}: unknown label {label!r}. Accepted: "
                + (f"an index in [0, {len(names)})" if indices else
                   f"a class name of the {len(names)} classes")
                + (f" of {label_map}." if label_map else ".")
            )
        entries.append(
            VideoEntry(
                video_id=path,
                path=join_video_path(base, path),
                labels=ids,
                label_text=";".join(names[i] for i in ids),
            )
        )
    found, missing = split_existing(entries)
    chosen = label_map or ("indices" if indices else "sorted names")
    return Annotation(entries=found, label_names=names, missing=missing,
                      classes_from=chosen)
