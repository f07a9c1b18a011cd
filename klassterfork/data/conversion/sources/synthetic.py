"""Reader for the bundled synthetic dataset (`klassterfork.data.conversion.synthetic`).

`annotations` is the dataset folder (or its `{split}.json`): SSv2-style
`{split}.json` entries `{"id", "label", "template"}`, `labels.json`
`{template without brackets: "index"}` and `flip_map.json`.
"""

import json
import re

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import split_existing

SPLITS = {"train": "train", "validation": "validation", "val": "validation"}
EXTENSIONS = (".mp4", ".webm")


def _load(path):
    with fs.open_file(path) as f:  # a local path or a URL
        return json.load(f)


@SOURCES.register("synthetic")
def read(*, annotations, videos=None, split):
    """Reads one split of the synthetic dataset.

    Args:
        annotations: str. The dataset folder, or a `{split}.json` in it.
        videos: str or None. Folder of `<id>.mp4` / `<id>.webm`. Defaults to
            `{folder}/videos`.
        split: str. "train", "validation" (or "val").

    Returns:
        Annotation with `flip_label_map` from `flip_map.json`.

    Raises:
        ValueError: an unknown split, or a template missing from labels.json.
    """
    if fs.isdir(annotations):
        if split not in SPLITS:
            raise ValueError(
                f"`split` must be one of {sorted(SPLITS)}. Received: {split=}"
            )
        folder, split_file = annotations, fs.join(annotations, f"{SPLITS[split]}.json")
    else:
        folder, split_file = fs.parent(annotations), annotations
    videos = videos if videos is not None else fs.join(folder, "videos")
    label_index = {k: int(v) for k, v in _load(fs.join(folder, "labels.json")).items()}
    names = [""] * len(label_index)
    for name, i in label_index.items():
        names[i] = name
    entries = []
    for item in _load(split_file):
        key = re.sub(r"\[(.*?)\]", r"\1", item["template"])
        if key not in label_index:
            raise ValueError(
                f"{split_file}: id {item['id']}: template {item['template']!r} is "
                f"not in labels.json ({len(names)} classes)."
            )
        path = fs.join(videos, f"{item['id']}{EXTENSIONS[0]}")
        for ext in EXTENSIONS[1:]:
            if not fs.exists(path) and fs.exists(path[: -len(EXTENSIONS[0])] + ext):
                path = path[: -len(EXTENSIONS[0])] + ext
        entries.append(
            VideoEntry(
                video_id=str(item["id"]),
                path=path,
                labels=(label_index[key],),
                label_text=key,
            )
        )
    flip_path = fs.join(folder, "flip_map.json")
    flip = _load(flip_path)["flip_label_map"] if fs.exists(flip_path) else None
    found, missing = split_existing(entries)
    return Annotation(entries=found, label_names=names, missing=missing, flip_label_map=flip)
