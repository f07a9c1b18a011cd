"""Frame-folder lists: TSN / TDN lists and mmaction2 rawframe annotation files.

Line forms (blank separated; `path` is a folder of frames, relative to
`videos` unless absolute):

    path num_frames label               TSN/TDN, mmaction2 `rawframe_test_list.txt`
    path num_frames                     unlabelled (test lists)
    path offset num_frames label        `with_offset=True` (mmaction2
                                        `rawframe_test_list_with_offset.txt`)
    path num_frames label label ...     `multi_label=True` (mmaction2
                                        `rawframe_test_list_multi_label.txt`)

Offset and multi-label forms both have four columns, so the caller says which
(as mmaction2's `with_offset` / `multi_class` flags do). Frame file `i` of a
video (0-based) is `pattern % (start_index + offset + i)`: `img_00001.jpg`
first with the defaults.
"""

import dataclasses
import os

from klassterfork.data import frames as frames_lib
from klassterfork.data.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.sources.json_list import (
    join_video_path,
    load_label_names,
    read_lines,
)


@dataclasses.dataclass(frozen=True)
class FrameEntry(VideoEntry):
    """A `VideoEntry` whose `path` is a frame folder.

    Attributes:
        pattern: str. Frame file name pattern, e.g. "img_%05d.jpg".
        first_index: int. Index of the first frame file.
        flow_patterns: (str, str) or None. x and y flow file patterns.
    """

    pattern: str = frames_lib.DEFAULT_PATTERN
    first_index: int = 1
    flow_patterns: tuple | None = None


def _parse_line(line, where, with_offset, multi_label):
    """(path, offset, num_frames, labels) of one list line."""
    fields = line.split()
    head = 3 if with_offset else 2
    if len(fields) < head or (not multi_label and len(fields) > head + 1):
        form = "path offset num_frames" if with_offset else "path num_frames"
        more = " label [label ...]" if multi_label else " [label]"
        raise ValueError(
            f"{where}: expected `{form}{more}`. Received: {line!r}"
            + ("" if multi_label else " (multi-label lists need multi_label=True)")
        )
    try:
        numbers = [int(x) for x in fields[1:]]
    except ValueError:
        raise ValueError(
            f"{where}: offset, num_frames and labels must be integers. "
            f"Received: {line!r}"
        ) from None
    offset = numbers[0] if with_offset else 0
    num_frames = numbers[head - 2]
    return fields[0], offset, num_frames, tuple(numbers[head - 1 :])


def _missing_reason(folder, pattern, flow_patterns, first_index, num_frames):
    """Why a listed folder cannot be converted, or None.

    Checks the first and last frame, and the first image of each flow
    component (denseflow writes T - 1 flows for T frames, so their count is
    left to `flow.read_flow_folder`). Stat calls only: lists are long.
    """
    if num_frames < 1:
        return f"num_frames={num_frames} < 1"
    if not os.path.isdir(folder):
        return "frame folder not found"
    last = first_index + num_frames - 1
    names = [frames_lib.format_index(pattern, i) for i in (first_index, last)]
    names += [frames_lib.format_index(p, first_index) for p in flow_patterns or ()]
    for name in names:
        if not os.path.isfile(os.path.join(folder, name)):
            return f"frame file not found: {name}"
    return None


@SOURCES.register("frames")
def read(
    *,
    annotations,
    videos,
    split,
    pattern=frames_lib.DEFAULT_PATTERN,
    start_index=1,
    with_offset=False,
    multi_label=False,
    flow_patterns=None,
    label_map=None,
):
    """Reads a frame-folder list file.

    Args:
        annotations: str. The list file.
        videos: str or None. Folder the relative frame folders are under.
        split: str. Name of the split (the file already is one split).
        pattern: str. Frame file pattern. Defaults to "img_%05d.jpg".
        start_index: int. Index of a video's first frame file. Defaults to 1.
        with_offset: bool. Lines carry an offset column (see module doc).
        multi_label: bool. Lines may carry several labels.
        flow_patterns: (str, str) or None. Also require flow images, e.g.
            ("x_%05d.jpg", "y_%05d.jpg").
        label_map: str or None. Class list; defaults to "0".."N-1".

    Returns:
        Annotation of `FrameEntry`; a folder whose first or last frame (or
        flow image) is absent goes to `missing`.

    Raises:
        ValueError: a malformed line or a label outside the label map.
    """
    del split  # One file is one split.
    parsed = []
    for n, line in enumerate(read_lines(annotations), 1):
        where = f"{annotations}:{n}"
        parsed.append((where, *_parse_line(line, where, with_offset, multi_label)))
    if label_map is not None:
        names = load_label_names(label_map)
    else:
        top = max((max(p[4]) for p in parsed if p[4]), default=-1)
        names = [str(i) for i in range(top + 1)]
    flow_patterns = tuple(flow_patterns) if flow_patterns else None
    entries, missing = [], []
    for where, rel, offset, num_frames, labels in parsed:
        bad = [x for x in labels if not 0 <= x < len(names)]
        if bad:
            raise ValueError(
                f"{where}: labels {bad} outside [0, {len(names)}) of {label_map}."
            )
        folder = join_video_path(videos, rel)
        first = start_index + offset
        reason = _missing_reason(folder, pattern, flow_patterns, first, num_frames)
        if reason:
            missing.append((folder, reason))
            continue
        video_id = f"{rel}@{offset}" if with_offset else rel
        entries.append(
            FrameEntry(
                video_id=video_id,
                path=folder,
                labels=labels,
                label_text=";".join(names[i] for i in labels),
                num_frames=num_frames,
                pattern=pattern,
                first_index=first,
                flow_patterns=flow_patterns,
            )
        )
    return Annotation(entries=entries, label_names=names, missing=missing)
