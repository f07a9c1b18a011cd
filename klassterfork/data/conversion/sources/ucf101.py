"""UCF101 (Soomro et al., 2012): the official `ucfTrainTestlist` split files.

`classInd.txt` lines are `<1-based index> <ClassName>`; `trainlistNN.txt`
lines are `<Class>/<video>.avi <1-based index>`; `testlistNN.txt` lines are
`<Class>/<video>.avi` and take the label from the folder name. Folds 1-3;
the files use CRLF. Videos live at `videos/<Class>/<video>.avi`.

Split `all` is the train list then the test list of the fold: every one of
the 13,320 videos, what zero-shot evaluation (Brattoli et al., CVPR 2020)
scores on.

Class ids are 0-based here: `classInd` index 1 is class 0.
"""

import os

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import (
    join_video_path,
    load_label_names,
    read_lines,
    split_existing,
)

SPLITS = {"train": ("trainlist",), "test": ("testlist",),
          "all": ("trainlist", "testlist")}
FOLDS = (1, 2, 3)


def find_split_dir(annotations):
    """The folder holding `classInd.txt` (`annotations` or its `ucfTrainTestlist`)."""
    for folder in (annotations, fs.join(annotations, "ucfTrainTestlist")):
        if fs.isfile(fs.join(folder, "classInd.txt")):
            return folder
    raise FileNotFoundError(
        f"`annotations` must be a folder with classInd.txt (or its parent). "
        f"Received: annotations={annotations!r}"
    )


@SOURCES.register("ucf101")
def read(*, annotations, videos, split, fold=1):
    """Reads one UCF101 split.

    Args:
        annotations: str. `ucfTrainTestlist` folder (or its parent).
        videos: str or None. UCF-101 root with one folder per class.
        split: str. "train", "test", or "all" (both lists of the fold).
        fold: int. Official split 1, 2 or 3. Defaults to 1.

    Returns:
        Annotation with 101 classes in `classInd.txt` order.

    Raises:
        ValueError: bad split/fold, or a line whose label disagrees with its
            class folder.
    """
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {sorted(SPLITS)}. Received: split={split!r}"
        )
    if fold not in FOLDS:
        raise ValueError(f"`fold` must be one of {FOLDS}. Received: fold={fold!r}")
    folder = find_split_dir(annotations)
    names = load_label_names(fs.join(folder, "classInd.txt"))
    index = {name: i for i, name in enumerate(names)}
    entries = []
    for prefix in SPLITS[split]:
        list_path = fs.join(folder, f"{prefix}{fold:02d}.txt")
        entries += _read_list(list_path, index, videos)
    found, missing = split_existing(entries)
    return Annotation(entries=found, label_names=names, missing=missing)


def _read_list(list_path, index, videos):
    """VideoEntry per line of a train/test list (labels checked vs the folder)."""
    entries = []
    for n, line in enumerate(read_lines(list_path), 1):
        fields = line.split()
        rel = fields[0]
        class_name = rel.split("/")[0]
        if class_name not in index:
            raise ValueError(
                f"{list_path}:{n}: class folder {class_name!r} is not in classInd.txt."
            )
        label = index[class_name]
        if len(fields) > 1 and int(fields[1]) - 1 != label:
            raise ValueError(
                f"{list_path}:{n}: label {fields[1]} (1-based) disagrees with "
                f"the class folder {class_name!r} (index {label + 1})."
            )
        entries.append(
            VideoEntry(
                video_id=os.path.splitext(os.path.basename(rel))[0],
                path=join_video_path(videos, rel),
                labels=(label,),
                label_text=class_name,
            )
        )
    return entries
