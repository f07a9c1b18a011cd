"""What every annotation reader returns, and the registry of readers.

A reader is `read(*, annotations, videos, split, **options) -> Annotation`,
registered by dataset name; `kf-convert --dataset NAME` looks it up here.
"""

import dataclasses

from klassterfork.registry import Registry

SOURCES = Registry("dataset source")


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video (or frame folder) to convert.

    Attributes:
        video_id: str. The dataset's id, written to `video/id`.
        path: str. Video file, or frame folder for frame-list sources.
        labels: tuple of int. Class indices; empty for unlabelled test videos.
        label_text: str. Class name(s), ";"-joined.
        num_frames: int or None. Known frame count (frame folders).
    """

    video_id: str
    path: str
    labels: tuple = ()
    label_text: str = ""
    num_frames: int | None = None


@dataclasses.dataclass
class Annotation:
    """A split's entries plus its label map.

    Attributes:
        entries: list of VideoEntry whose file exists.
        label_names: list of str; index = class id.
        missing: list of (path, reason) for annotated videos not found.
        flip_label_map: list of int or None. Label after a horizontal flip,
            per class; -1 means the class is never flipped.
        classes_from: str or None. Where `label_names` came from when the
            reader chose it ("sorted names", "indices", or the label map
            file); `kf-convert` prints the map for "sorted names".
        split: str or None. The split's one spelling when the reader was
            given an alias (Kinetics / SSv2 `val` -> "validation"):
            `kf-convert` writes that name. None: the name as given.
    """

    entries: list
    label_names: list
    missing: list = dataclasses.field(default_factory=list)
    flip_label_map: list | None = None
    classes_from: str | None = None
    split: str | None = None
