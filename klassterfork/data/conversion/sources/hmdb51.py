"""HMDB51 (Kuehne et al., 2011): the official `testTrainMulti_7030_splits`.

One file per class and fold, `<class>_test_split<N>.txt`, with lines
`<video>.avi <0|1|2> ` (1 = train, 2 = test, 0 = unused in that fold; note the
trailing blank). Per fold and class 70 videos train and 30 test. Videos live
at `videos/<class>/<video>.avi`.

Split `all` is every video listed in the fold's files, whatever its code:
all 6,766 videos (each file lists every video of its class), what
zero-shot evaluation (Brattoli et al., CVPR 2020) scores on.

Class order: sorted class names by default, which equals mmaction2's
`hmdb51/label_map.txt`. TSN's `class_list.txt` orders differently
(`kick_ball` before `kick`, `sword_exercise` before `sword`: it sorted the
split-file names, where "_" < "t"); pass `label_map=` to use such a list.
"""

import os
import re

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import (
    join_video_path,
    load_label_names,
    read_lines,
    split_existing,
)

SPLIT_CODES = {"train": ("1",), "test": ("2",), "unused": ("0",),
               "all": ("0", "1", "2")}
FOLDS = (1, 2, 3)
_SPLIT_FILE = re.compile(r"^(.+)_test_split([123])\.txt$")


def find_split_dir(annotations):
    """The folder holding the split files (`annotations` or a child of it)."""
    candidates = [annotations, fs.join(annotations, "testTrainMulti_7030_splits")]
    for folder in candidates:
        if fs.isdir(folder) and any(
            _SPLIT_FILE.match(f) for f in fs.listdir(folder)
        ):
            return folder
    raise FileNotFoundError(
        "`annotations` must be a folder with <class>_test_split<N>.txt files "
        f"(or its parent). Received: annotations={annotations!r}"
    )


@SOURCES.register("hmdb51")
def read(*, annotations, videos, split, fold=1, label_map=None):
    """Reads one HMDB51 split.

    Args:
        annotations: str. `testTrainMulti_7030_splits` folder (or its parent).
        videos: str or None. HMDB51 root with one folder per class.
        split: str. "train", "test", "unused", or "all" (every video).
        fold: int. Official split 1, 2 or 3. Defaults to 1.
        label_map: str or None. Class list fixing the order (e.g. TSN's
            `class_list.txt`). Defaults to the sorted class names.

    Returns:
        Annotation with 51 classes.

    Raises:
        ValueError: bad split/fold, a malformed line, or split files whose
            classes differ from `label_map`.
    """
    if split not in SPLIT_CODES:
        raise ValueError(
            f"`split` must be one of {sorted(SPLIT_CODES)}. Received: split={split!r}"
        )
    if fold not in FOLDS:
        raise ValueError(f"`fold` must be one of {FOLDS}. Received: fold={fold!r}")
    folder = find_split_dir(annotations)
    files = {}
    for name in fs.listdir(folder):
        m = _SPLIT_FILE.match(name)
        if m and int(m.group(2)) == fold:
            files[m.group(1)] = fs.join(folder, name)
    if label_map is None:
        names = sorted(files)
    else:
        names = load_label_names(label_map)
        if set(names) != set(files):
            raise ValueError(
                f"{label_map}: classes differ from the split files in {folder}: "
                f"only in the list {sorted(set(names) - set(files))}, "
                f"only in the files {sorted(set(files) - set(names))}."
            )
    codes = SPLIT_CODES[split]
    entries = []
    for label, class_name in enumerate(names):
        path = files[class_name]
        for n, line in enumerate(read_lines(path), 1):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(
                    f"{path}:{n}: expected `<video>.avi <0|1|2>`. Received: {line!r}"
                )
            if fields[1] not in codes:
                continue
            entries.append(
                VideoEntry(
                    video_id=os.path.splitext(fields[0])[0],
                    path=join_video_path(videos, os.path.join(class_name, fields[0])),
                    labels=(label,),
                    label_text=class_name,
                )
            )
    found, missing = split_existing(entries)
    return Annotation(entries=found, label_names=names, missing=missing)
