"""Frame-folder lists: TSN / TDN lists and mmaction2 rawframe annotation files.

Line forms (blank separated; `path` is a folder of frames, relative to
`videos` unless absolute or a URL; the list, `videos` and the folders may be
URLs such as `gs://b/frames`, read through `fs`):

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

`encode_entry` is the converter's worker task for these entries (the frame
folder counterpart of `video.decode_to_jpeg`), with optional optical flow.
"""

import dataclasses

from klassterfork.data.conversion import flow as flow_lib
from klassterfork.data.conversion import frames as frames_lib
from klassterfork.data.conversion import fs, video
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry
from klassterfork.data.conversion.sources.json_list import (
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
        fps: float or None. Frame rate of the folder, when known.
    """

    pattern: str = frames_lib.DEFAULT_PATTERN
    first_index: int = 1
    flow_patterns: tuple | None = None
    fps: float | None = None


@dataclasses.dataclass
class EncodedFrames(video.EncodedVideo):
    """`video.EncodedVideo` plus optional flow: what `encode_entry` returns.

    Attributes:
        flow_x, flow_y: list of bytes or None. One grayscale JPEG per frame.
        flow_bound: float or None. Clipping bound of the flow.
    """

    flow_x: list | None = None
    flow_y: list | None = None
    flow_bound: float | None = None


FLOW_MODES = (None, "farneback", "import")


def encode_entry(
    entry,
    *,
    short_side=None,
    fps=None,
    max_frames=None,
    quality=frames_lib.DEFAULT_QUALITY,
    flow=None,
    flow_bound=flow_lib.DEFAULT_BOUND,
):
    """A frame folder's stored frames (and flow): the converter's task.

    Frames that already are RGB JPEGs at the target size are kept byte for
    byte, with Farneback flow too (computed from their decoded pixels);
    others are decoded, resized (short side) and re-encoded. `fps`
    resamples by time (frame i shown at i / entry.fps), as for videos.

    Args:
        entry: FrameEntry.
        short_side: int or None. Target short side; None keeps the size.
        fps: float or None. Output rate; needs `entry.fps`. None keeps all.
        max_frames: int or None. Keep the first N output frames.
        quality: int. JPEG quality when re-encoding. Defaults to 90.
        flow: None, "farneback" (computed between consecutive stored frames,
            see `flow.farneback_frames`) or "import" (the folder's
            `entry.flow_patterns` images, see `flow.read_flow_folder`; image i
            goes with stored frame i, the last one repeats).
        flow_bound: float. Flow clipping bound. Defaults to 20.

    Returns:
        EncodedFrames; `fps` is 0.0 when the folder's rate is unknown.

    Raises:
        ValueError: bad `flow`, or `fps` without `entry.fps`.
        FileNotFoundError: a frame file is absent.
    """
    if flow not in FLOW_MODES:
        raise ValueError(f"`flow` must be one of {FLOW_MODES}. Received: flow={flow!r}")
    paths = frames_lib.frame_paths(
        entry.path,
        entry.pattern,
        first_index=entry.first_index,
        num_frames=entry.num_frames,
    )
    keep = _kept_indices(entry, len(paths), fps=fps, max_frames=max_frames)
    paths = [paths[i] for i in keep]
    jpegs, height, width, decoded = _stored_frames(
        entry, paths, short_side=short_side, quality=quality,
        need_pixels=flow == "farneback")
    out = EncodedFrames(
        frames=jpegs,
        fps=float(fps or entry.fps or 0.0),
        height=height,
        width=width,
        source_fps=float(entry.fps or 0.0),
        rotation=0,
        num_decoded=len(paths),
    )
    if flow == "farneback":
        out.flow_x, out.flow_y = flow_lib.farneback_frames(decoded, bound=flow_bound)
    elif flow == "import":
        xs, ys = flow_lib.read_flow_folder(
            entry.path,
            entry.flow_patterns or flow_lib.DEFAULT_PATTERNS,
            short_side=short_side,
            first_index=entry.first_index,
            bound=flow_bound,
        )
        last = len(xs) - 1
        out.flow_x = [xs[min(i, last)] for i in keep]
        out.flow_y = [ys[min(i, last)] for i in keep]
    if flow is not None:
        out.flow_bound = float(flow_bound)
    return out


def _kept_indices(entry, num_frames, *, fps, max_frames):
    """Indices of the folder's frames to store: resampled to `fps` by time
    (frame i at i / entry.fps), then the first `max_frames`."""
    keep = list(range(num_frames))
    if fps is not None:
        if not entry.fps:
            raise ValueError(
                f"{entry.path}: `fps` resampling needs the folder's frame rate; "
                "give the reader `fps=`. Received: entry.fps=None"
            )
        keep = video.resample_indices([i / entry.fps for i in keep], fps)
    return keep[:max_frames] if max_frames else keep


def _stored_frames(entry, paths, *, short_side, quality, need_pixels):
    """The JPEGs to store for frame files `paths`: the files' bytes when they
    are RGB JPEGs at the target size, else decoded, resized and re-encoded.

    Returns:
        (list of bytes, height, width, decoded RGB frames or None); the
        frames are decoded when re-encoding or when `need_pixels` (flow).
    """
    kept = frames_lib.jpegs_if_target_size(paths, short_side)
    if kept is not None:
        jpegs, height, width = kept
        decoded = None
        if need_pixels:
            # Flow needs the pixels; the stored frames stay the files' bytes.
            decoded = [
                frames_lib.decode_rgb(data, path) for path, data in zip(paths, jpegs)
            ]
        return jpegs, height, width, decoded
    decoded = [
        frames_lib.resize_short_side(frames_lib.decode_rgb(data, path), short_side)
        for path, data in zip(paths, frames_lib.read_bytes(paths))
    ]
    sizes = {f.shape for f in decoded}
    if len(sizes) > 1:
        raise ValueError(f"{entry.path}: frames differ in size: {sorted(sizes)}")
    jpegs = [frames_lib.encode_jpeg(f, quality) for f in decoded]
    height, width = decoded[0].shape[:2]
    return jpegs, height, width, decoded


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
    left to `flow.read_flow_folder`). Stat calls only: lists are long. A
    URL folder is checked through `fs` (see `_missing_reasons`).
    """
    if num_frames < 1:
        return f"num_frames={num_frames} < 1"
    if not fs.isdir(folder):
        return "frame folder not found"
    last = first_index + num_frames - 1
    names = [frames_lib.format_index(pattern, i) for i in (first_index, last)]
    names += [frames_lib.format_index(p, first_index) for p in flow_patterns or ()]
    for name in names:
        if not fs.isfile(fs.join(folder, name)):
            return f"frame file not found: {name}"
    return None


def _missing_reasons(folders, pattern, flow_patterns):
    """`_missing_reason` of each (folder, first_index, num_frames), in order.

    Local folders are checked one after another; when any is a URL the
    checks run `fs.thread_map`'s few at a time, as each stat call is a
    request (a long list on `gs://` would otherwise take hours).
    """
    def reason(item):
        folder, first, num_frames = item
        return _missing_reason(folder, pattern, flow_patterns, first, num_frames)

    if any(fs.is_remote(folder) for folder, _, _ in folders):
        return fs.thread_map(reason, folders)
    return [reason(item) for item in folders]


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
    fps=None,
):
    """Reads a frame-folder list file.

    Args:
        annotations: str. The list file.
        videos: str or None. Folder the relative frame folders are under
            (a local path or a URL).
        split: str. Name of the split (the file already is one split).
        pattern: str. Frame file pattern. Defaults to "img_%05d.jpg".
        start_index: int. Index of a video's first frame file. Defaults to 1.
        with_offset: bool. Lines carry an offset column (see module doc).
        multi_label: bool. Lines may carry several labels.
        flow_patterns: (str, str) or None. Also require flow images, e.g.
            ("x_%05d.jpg", "y_%05d.jpg").
        label_map: str or None. Class list; defaults to "0".."N-1".
        fps: float or None. Frame rate of the folders (e.g. 12 for SSv2
            dumps), for `encode_entry(fps=...)` and the record's `video/fps`.

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
    for where, *_, labels in parsed:
        bad = [x for x in labels if not 0 <= x < len(names)]
        if bad:
            raise ValueError(
                f"{where}: labels {bad} outside [0, {len(names)}) of {label_map}."
            )
    folders = [(join_video_path(videos, rel), start_index + offset, num_frames)
               for _, rel, offset, num_frames, _ in parsed]
    reasons = _missing_reasons(folders, pattern, flow_patterns)
    entries, missing = [], []
    for (_, rel, offset, num_frames, labels), (folder, first, _), reason in zip(
            parsed, folders, reasons):
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
                fps=fps,
            )
        )
    return Annotation(entries=entries, label_names=names, missing=missing)
