"""Kinetics-400/600/700 (Kay et al., 2017): the official ActivityNet CSVs.

Columns `label,youtube_id,time_start,time_end,split` (K400 adds `is_cc`; the
test CSV has no `label`). A clip is stored as
`{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`, either flat in `videos`
or in a folder per class (`videos/<label>/`, spaces kept or replaced by
"_"). Many YouTube clips are gone: missing files are counted in
`Annotation.missing`, never fatal.

Splits: "train", "validation" and "test", the names the recipes read. The
validation CSV is `*_val.csv` (ActivityNet, CVDF) or `*validate.csv`
(Kinetics-700-2020); `--split val` / `validate` are read as "validation" and
written under that name.

Class ids: the line order of `label_map` (mmaction2's `label_map_k400.txt`,
which equals the sorted class names); by default `label_map_k{N}.txt` beside
a `kinetics-{N}_*.csv`, else the sorted names found in the CSV.
"""

import csv
import fnmatch
import os
import re

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import load_label_names

REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")
SPLIT_ALIASES = {"val": "validation", "validate": "validation"}
# split -> the endings of its CSV's name, `*{ending}.csv`.
CSV_ENDINGS = {"train": ("train",), "validation": ("validation", "validate", "val"),
               "test": ("test",)}
_VERSION = re.compile(r"kinetics-?(\d+)", re.IGNORECASE)


def clip_name(youtube_id, time_start, time_end, extension=".mp4"):
    """`{youtube_id}_{start:06d}_{end:06d}.mp4`, the downloader's file name."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}{extension}"


def canonical_split(split):
    """The one spelling of a split: "val" / "validate" -> "validation"."""
    return SPLIT_ALIASES.get(split, split)


def find_csv(annotations, split):
    """`annotations` if a file, else the one CSV of `split` in that folder
    (`*{ending}.csv` for an ending of `CSV_ENDINGS[split]`)."""
    if fs.isfile(annotations):
        return annotations
    split = canonical_split(split)
    patterns = [f"*{end}.csv" for end in CSV_ENDINGS.get(split, (split,))]
    try:  # a listing, not a glob: the same for a local folder and a URL
        listing = fs.listdir(annotations)
    except (FileNotFoundError, NotADirectoryError):
        listing = []
    listing = [n for n in listing if not n.startswith(".")]  # as glob's `*`
    found = sorted({fs.join(annotations, n) for pat in patterns
                    for n in fnmatch.filter(listing, pat)})
    if len(found) != 1:
        raise FileNotFoundError(
            f"`annotations` must be a Kinetics CSV, or a folder with exactly one "
            f"CSV of split {split!r} ({' or '.join(repr(p) for p in patterns)}). "
            f"Received: annotations={annotations!r}, found={found}"
        )
    return found[0]


def default_label_map(csv_path):
    """`label_map_k{N}.txt` beside `kinetics-{N}_*.csv`, or None."""
    m = _VERSION.search(os.path.basename(csv_path))
    if not m:
        return None
    path = fs.join(fs.parent(csv_path), f"label_map_k{m.group(1)}.txt")
    return path if fs.isfile(path) else None


def _locate(videos, label, name):
    """First existing candidate path, else the flat one."""
    videos = videos or ""
    flat = fs.join(videos, name)
    if label:
        for folder in (label, label.replace(" ", "_")):
            path = fs.join(videos, folder, name)
            if fs.exists(path):
                return path, True
    return flat, fs.exists(flat)


@SOURCES.register("kinetics")
def read(*, annotations, videos, split, label_map=None, extension=".mp4"):
    """Reads one Kinetics CSV.

    Args:
        annotations: str. The CSV, or a folder with one `*{split}.csv`.
        videos: str. Folder of the downloaded clips (flat or per class).
        split: str. "train", "validation" (alias "val", "validate") or
            "test"; picks the CSV in a folder. Rows whose `split` column names
            another split are kept (the file is the split).
        label_map: str or None. Class list file; see the module docstring.
        extension: str. Video file extension. Defaults to ".mp4".

    Returns:
        Annotation; test rows have no labels; `split` is the canonical
        name ("validation" for "val").

    Raises:
        ValueError: a missing column, or a label not in `label_map`.
    """
    csv_path = find_csv(annotations, split)
    with fs.open_file(csv_path, encoding="utf-8-sig") as f:  # local or a URL
        rows = list(csv.DictReader(f))
        columns = rows[0].keys() if rows else ()
    missing_columns = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing_columns:
        raise ValueError(
            f"{csv_path}: missing columns {missing_columns}. Expected "
            f"label,youtube_id,time_start,time_end,split (label optional). "
            f"Received: {list(columns)}"
        )
    label_map = label_map or default_label_map(csv_path)
    has_labels = "label" in columns
    if label_map is not None:
        names = load_label_names(label_map)
    elif has_labels:
        names = sorted({row["label"] for row in rows})
    else:
        names = []
    index = {name: i for i, name in enumerate(names)}
    entries, missing = [], []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        label = row.get("label") or ""
        if label and label not in index:
            raise ValueError(
                f"{csv_path}:{n}: label {label!r} is not in the label map "
                f"({label_map or 'from the CSV'}, {len(names)} classes)."
            )
        name = clip_name(
            row["youtube_id"],
            float(row["time_start"]),
            float(row["time_end"]),
            extension,
        )
        path, exists = _locate(videos, label, name)
        if not exists:
            missing.append((path, "video file not found"))
            continue
        labels = (index[label],) if label else ()
        entries.append(
            VideoEntry(
                video_id=os.path.splitext(name)[0],
                path=path,
                labels=labels,
                label_text=label,
            )
        )
    return Annotation(entries=entries, label_names=names, missing=missing,
                      split=canonical_split(split))
