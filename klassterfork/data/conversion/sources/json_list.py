"""Generic JSON list for custom datasets, plus helpers every reader shares.

The file is a JSON array of objects, one per video:

    [{"path": "cats/clip1.mp4", "label": "cat"},
     {"path": "dogs/clip7.mp4", "label": 1, "id": "clip7"},
     {"path": "both/clip9.mp4", "label": ["cat", "dog"]},
     {"path": "unlabelled.mp4"}]

`path` (alias `filename`, the mmaction2 key) is relative to `videos` unless
absolute; `label` (alias `labels`) is a class index, a class name, or a list
of either (multi-label), all of one kind in a file (see `check_label_kinds`);
a missing label means an unlabelled video. `id` defaults to `path` as
written, extension included (`a.avi` and `a.mp4` stay two ids).
`num_frames` (alias `total_frames`) is optional.
"""

import json
import os
import re

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry

_INDEXED_LINE = re.compile(r"^\s*(\d+)\s*[:, ]\s*(.+?)\s*$")


def read_lines(path):
    """Non-empty lines of a text file, stripped (CRLF and trailing blanks)."""
    with fs.open_file(path, encoding="utf-8-sig") as f:  # local or a URL
        return [line.strip() for line in f if line.strip()]


def load_label_names(path):
    """Reads a class list: index = class id.

    Accepts one name per line (mmaction2 `label_map_*.txt`, the order is the
    id), or `index name` / `index,name` / `index: name` lines whose indices are
    exactly 0..N-1 or 1..N (UCF101 `classInd.txt`, our `labels.txt`, AVA).
    Trailing blanks are stripped (HMDB51 `class_list.txt` has them).

    Returns:
        list of str, length N.

    Raises:
        ValueError: the file is empty or names a class twice.
    """
    lines = read_lines(path)
    if not lines:
        raise ValueError(f"{path}: the class list is empty.")
    names = lines
    matches = [_INDEXED_LINE.match(line) for line in lines]
    if all(matches):
        indices = [int(m.group(1)) for m in matches]
        base = min(indices)
        if base in (0, 1) and sorted(indices) == list(range(base, base + len(lines))):
            names = [""] * len(lines)
            for i, m in zip(indices, matches):
                names[i - base] = m.group(2)
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{path}: class {name!r} appears twice (line {i + 1}).")
        seen.add(name)
    return names


def check_label_kinds(labels, is_index):
    """Whether labels are class indices; raises if indices and names mix.

    Args:
        labels: list of (where, label), in file order, unlabelled left out.
        is_index: callable label -> bool.

    Returns:
        bool: True when every label is an index (False for none).

    Raises:
        ValueError: naming the first label whose kind differs from the first
            label's.
    """
    if not labels:
        return False
    first_where, first = labels[0]
    kind = bool(is_index(first))
    for where, label in labels[1:]:
        if bool(is_index(label)) != kind:
            what = ("a class name", "a class index")
            raise ValueError(
                f"{where}: label {label!r} is {what[not kind]} but {first_where} "
                f"has {what[kind]} ({first!r}). Labels must be all class indices "
                "or all class names (names are looked up in --labels FILE, or "
                "sorted when there is none)."
            )
    return kind


def split_existing(entries, what="video file"):
    """Partitions entries into (found, missing) by `fs.exists(entry.path)`
    (a local path or a URL: one request per video on an object store).

    Returns:
        (list of VideoEntry, list of (path, reason)).
    """
    found, missing = [], []
    for entry in entries:
        if fs.exists(entry.path):
            found.append(entry)
        else:
            missing.append((entry.path, f"{what} not found"))
    return found, missing


def join_video_path(videos, path):
    """`path` if absolute or a URL, else `videos/path` (`path` itself if
    `videos` is None); `videos` may be a URL."""
    if videos is None or os.path.isabs(path) or fs.is_remote(path):
        return path
    return fs.join(videos, path)


def _label_indices(raw, names, where):
    """Maps a label (int, str, or a list of them) to class indices."""
    values = raw if isinstance(raw, list) else [raw]
    indices = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(
                f"{where}: `label` must be an int, a str, or a list of them. "
                f"Received: label={raw!r}"
            )
        if isinstance(value, int):
            if not 0 <= value < len(names):
                raise ValueError(
                    f"{where}: `label` must be in [0, {len(names)}). "
                    f"Received: label={value}"
                )
            indices.append(value)
        elif value in names:
            indices.append(names.index(value))
        else:
            raise ValueError(
                f"{where}: unknown class {value!r}; the label map has "
                f"{len(names)} classes."
            )
    return tuple(indices)


@SOURCES.register("json")
def read(*, annotations, videos, split, label_map=None):
    """Reads a generic JSON list (see the module docstring).

    Args:
        annotations: str. The JSON file.
        videos: str or None. Folder the relative paths are under.
        split: str. Name of the split (the file already is one split).
        label_map: str or None. Class list file (see `load_label_names`).
            Defaults to the sorted class names when labels are names, or
            "0".."N-1" when they are indices.

    Returns:
        Annotation.

    Raises:
        ValueError: the file is not a list of objects with `path`, or a label
            is unknown.
    """
    del split  # One file is one split.
    with fs.open_file(annotations, encoding="utf-8-sig") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(
            f"{annotations}: must be a JSON list of objects. "
            f"Received: {type(items).__name__}"
        )
    raws = []
    for i, item in enumerate(items):
        where = f"{annotations}: item {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object. Received: {item!r}")
        path = item.get("path", item.get("filename"))
        if not isinstance(path, str):
            raise ValueError(
                f"{where}: needs a `path` (or `filename`) string. "
                f"Accepted keys: path, filename, label, labels, id, num_frames, "
                f"total_frames. Received keys: {sorted(item)}"
            )
        raw = item.get("label", item.get("labels"))
        raws.append((where, path, raw, item))
    flat = [
        (where, v)
        for where, _, raw, _ in raws
        if raw is not None
        for v in (raw if isinstance(raw, list) else [raw])
    ]
    check_label_kinds(flat, lambda v: isinstance(v, int) and not isinstance(v, bool))
    flat = [v for _, v in flat]
    chosen = label_map
    if label_map is not None:
        names = load_label_names(label_map)
    else:
        if all(isinstance(v, str) for v in flat):
            names, chosen = sorted(set(flat)), "sorted names"
        else:
            chosen = "indices"
            ints = [v for v in flat if isinstance(v, int)]
            names = [str(i) for i in range(max(ints, default=-1) + 1)]
    entries = []
    for where, path, raw, item in raws:
        labels = () if raw is None else _label_indices(raw, names, where)
        num_frames = item.get("num_frames", item.get("total_frames"))
        entries.append(
            VideoEntry(
                video_id=str(item.get("id", path)),
                path=join_video_path(videos, path),
                labels=labels,
                label_text=";".join(names[i] for i in labels),
                num_frames=None if num_frames is None else int(num_frames),
            )
        )
    found, missing = split_existing(entries)
    return Annotation(entries=found, label_names=names, missing=missing,
                      classes_from=chosen)
