"""Something-Something-v2 (Goyal et al., ICCV 2017): the official 20BN json files.

- `something-something-v2-labels.json`: `{template: "index"}`, 174 classes,
  templates written without brackets ("Putting something on a surface").
- `something-something-v2-{train,validation}.json`: objects with `id`,
  `template` (with brackets: "Putting [something] on a surface"), `label`
  (the filled-in sentence) and `placeholders`.
- `something-something-v2-test.json`: `{"id": ...}` only: unlabelled.
Videos are `videos/<id>.webm`.

`augmentation_mappings.json` (20BN baseline) gives the label maps for a
horizontal flip (`flip_label_map`) and for time reversal
(`time_reversal_label_map`); the reader attaches the flip map when that file
sits beside the labels json.
"""

import json

from klassterfork.data.conversion import fs
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import split_existing

LABELS_FILE = "something-something-v2-labels.json"
MAPPINGS_FILE = "augmentation_mappings.json"
SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "validation": "something-something-v2-validation.json",
    "val": "something-something-v2-validation.json",
    "test": "something-something-v2-test.json",
}
SPLIT_ALIASES = {"val": "validation"}  # read as, and written under, "validation"


def class_name(template):
    """`"Putting [something] on a surface"` -> `"Putting something on a surface"`."""
    return template.replace("[", "").replace("]", "")


def load_label_names(path):
    """Reads `something-something-v2-labels.json`: list of 174 names by index."""
    with fs.open_file(path, encoding="utf-8-sig") as f:  # a local path or a URL
        table = json.load(f)
    names = [None] * len(table)
    for name, index in table.items():
        i = int(index)
        if not 0 <= i < len(table) or names[i] is not None:
            raise ValueError(
                f"{path}: index {index!r} of {name!r} is out of range or repeated; "
                f"indices must be 0..{len(table) - 1} once each."
            )
        names[i] = name
    return names


def _load_mappings(mappings):
    if isinstance(mappings, dict):
        return mappings
    with fs.open_file(mappings, encoding="utf-8-sig") as f:
        return json.load(f)


def _indices(names, classes, where):
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(classes) - set(index))
    if unknown:
        raise ValueError(f"{where}: classes not in the label map: {unknown}")
    return index


def _label_map(names, swaps, keeps, never, where):
    """label -> swaps[label], label if in keeps, -1 if in never or unlisted."""
    index = _indices(names, list(swaps) + list(swaps.values()) + keeps + never, where)
    swapped, kept, dropped = set(swaps), set(keeps), set(never)
    both = sorted(swapped & kept | swapped & dropped | kept & dropped)
    if both:
        raise ValueError(f"{where}: classes listed under two policies: {both}")
    out = [-1] * len(names)
    for name in keeps:
        out[index[name]] = index[name]
    for name, target in swaps.items():
        out[index[name]] = index[target]
    return out


def flip_label_map(mappings, label_names):
    """Label after a horizontal flip, per class (20BN baseline policy).

    "left/right" pairs are swapped ("Pushing something from left to right" <->
    "... right to left"), "left/right agnostic" classes keep their label, and
    every other class maps to -1: the file does not say what a flip makes of
    it, so it is never flipped.

    Args:
        mappings: str or dict. `augmentation_mappings.json` or its content.
        label_names: list of str. Class names by index.

    Returns:
        list of int, one per class: the flipped label or -1.
    """
    m = _load_mappings(mappings)
    return _label_map(
        label_names, m["left/right"], m["left/right agnostic"], [], "left/right"
    )


def time_reversal_label_map(mappings, label_names):
    """Label after reversing time, per class (20BN baseline policy).

    "reverse time" maps a class to its reversed class ("Opening something" ->
    "Closing something"), "reverse time agnostic" classes keep their label,
    and "reverse time false class" (reversal gives no SSv2 class) and unlisted
    classes map to -1: never reverse them.

    Args:
        mappings: str or dict. `augmentation_mappings.json` or its content.
        label_names: list of str. Class names by index.

    Returns:
        list of int, one per class: the reversed label or -1.
    """
    m = _load_mappings(mappings)
    return _label_map(
        label_names,
        m["reverse time"],
        m["reverse time agnostic"],
        m["reverse time false class"],
        "reverse time",
    )


def _split_file(annotations, split):
    if fs.isfile(annotations):
        return annotations
    if split not in SPLIT_FILES:
        raise ValueError(
            f"`split` must be one of {sorted(SPLIT_FILES)}. Received: split={split!r}"
        )
    return fs.join(annotations, SPLIT_FILES[split])


@SOURCES.register("ssv2")
def read(*, annotations, videos, split, labels=None, mappings=None, extension=".webm"):
    """Reads one SSv2 split.

    Args:
        annotations: str. Folder with the official json files, or one split
            json (then `labels` defaults to the labels json beside it).
        videos: str or None. Folder of `<id>.webm` files.
        split: str. "train", "validation" (or "val", written as
            "validation") or "test".
        labels: str or None. `something-something-v2-labels.json`.
        mappings: str or None. `augmentation_mappings.json` for
            `Annotation.flip_label_map`; defaults to the file beside the labels
            json when present.
        extension: str. Video file extension. Defaults to ".webm".

    Returns:
        Annotation with 174 classes; test entries have no labels.

    Raises:
        ValueError: a template that is not a class, or an entry without `id`.
    """
    split_path = _split_file(annotations, split)
    folder = fs.parent(split_path)
    labels = labels or fs.join(folder, LABELS_FILE)
    names = load_label_names(labels)
    index = {name: i for i, name in enumerate(names)}
    mappings = mappings or fs.join(fs.parent(labels), MAPPINGS_FILE)
    flip = flip_label_map(mappings, names) if fs.isfile(mappings) else None
    with fs.open_file(split_path, encoding="utf-8-sig") as f:
        items = json.load(f)
    entries = []
    for i, item in enumerate(items):
        if "id" not in item:
            raise ValueError(f"{split_path}: item {i} has no `id`. Received: {item!r}")
        video_id = str(item["id"])
        path = f"{video_id}{extension}"
        path = path if videos is None else fs.join(videos, path)
        if "template" not in item:  # test split: ids only
            entries.append(VideoEntry(video_id=video_id, path=path))
            continue
        name = class_name(item["template"])
        if name not in index:
            raise ValueError(
                f"{split_path}: id {video_id}: template {item['template']!r} is not "
                f"a class of {labels} (after removing the brackets: {name!r})."
            )
        entries.append(
            VideoEntry(
                video_id=video_id, path=path, labels=(index[name],), label_text=name
            )
        )
    found, missing = split_existing(entries)
    return Annotation(
        entries=found, label_names=names, missing=missing, flip_label_map=flip,
        split=SPLIT_ALIASES.get(split, split),
    )
