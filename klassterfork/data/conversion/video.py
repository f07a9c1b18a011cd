"""Video decoding with PyAV: rotation, short-side resize, fps resampling.

Facts this module is built on (checked on `../shared/data/videos`):
- Frame counts come from decoding. Headers lie or are absent (WebM/MKV carry
  no count; `moviepy/no_duration.webm` has no duration at all), so
  `num_frames = duration * fps` is never used.
- PyAV's `to_ndarray()` ignores the display matrix; we apply it
  (`VideoFrame.rotation`, counter-clockwise degrees as in FFmpeg), so
  `decord/video_90.mov` comes out 320 wide x 568 high, as a viewer shows it.
- A stream that breaks mid-way (`decord/corrupted.mp4` raises
  `InvalidDataError` after 28 of 50 frames) is an error, never a short clip.
- A cut file often decodes without any error: the first 40 % of
  `ssv2/166766.webm` yields 8 clean frames of 49. So the decoded count is
  compared with what the container declares (its frame count, else its
  duration x rate); ending more than `TRUNCATION_TOLERANCE` short is the
  error "truncated: decoded N of about M frames". Full files here decode
  within 1.4 frames of that estimate (`flipping_a_pancake.mkv`: 310 of 311.4);
  files that declare neither (`moviepy/no_duration.webm`) are not checked.
  An MP4/MOV cut inside its media data (its index, `moov`, usually comes
  last) cannot be opened, or breaks while decoding: the box sizes tell that
  it is truncated rather than corrupt.
- `fps=` resamples by presentation time (pts * time_base), not by index:
  `mmaction2/demo_skeleton.mp4` says r_frame_rate 30 but runs at 28.05 fps.

This module imports neither TensorFlow nor the record schema, so converter
worker processes stay light; `decode_to_jpeg` is their task function.
"""

import dataclasses
import math
import os
import struct

import av
import cv2
import numpy as np


# A decoded count may fall this short of the declared one (frames, fraction
# of the declared count) before the video counts as truncated: durations are
# rounded, and a container's duration can include a slightly longer audio track.
TRUNCATION_TOLERANCE = (2, 0.03)


class VideoDecodeError(RuntimeError):
    """A video that cannot be decoded completely.

    Attributes:
        path: str. The video file.
        reason: str. What went wrong, for the converter's manifest.
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass
class DecodedVideo:
    """Frames of one video, after rotation, resize and resampling.

    Attributes:
        frames: list of uint8 [H, W, 3] RGB arrays, in time order.
        fps: float. Frame rate of `frames`.
        height, width: int. Size of every frame.
        source_fps: float. The stream's average frame rate.
        rotation: int. Display rotation applied, counter-clockwise degrees
            (FFmpeg's sign: -90 means the picture was turned 90 clockwise).
        timestamps: list of float. Presentation time (s) of each frame.
        num_decoded: int. Frames decoded from the file (before resampling;
            smaller than the file's count when `max_frames` stopped early).
        truncated: str or None. With `keep_truncated`, the reason
            ("truncated: decoded N of about M frames") when the file ended
            early; None for a complete file.
    """

    frames: list
    fps: float
    height: int
    width: int
    source_fps: float
    rotation: int
    timestamps: list
    num_decoded: int
    truncated: str | None = None


@dataclasses.dataclass
class EncodedVideo:
    """JPEG frames of one video; what converter workers send back.

    Attributes:
        frames: list of bytes, one RGB JPEG per frame.
        fps, height, width, source_fps, rotation, num_decoded, truncated: as
            in `DecodedVideo`.
    """

    frames: list
    fps: float
    height: int
    width: int
    source_fps: float
    rotation: int
    num_decoded: int
    truncated: str | None = None


def short_side_size(height, width, short_side):
    """(new_height, new_width) with the short side equal to `short_side`.

    The long side is rounded to the nearest integer, keeping the aspect ratio.
    """
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def resize_short_side(frame, short_side):
    """Resizes uint8 [H, W, C] so that min(H, W) == `short_side`.

    INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging.
    Returns the frame unchanged when it already has that size.
    """
    height, width = frame.shape[:2]
    new_h, new_w = short_side_size(height, width, short_side)
    if (new_h, new_w) == (height, width):
        return frame
    shrink = new_h * new_w < height * width
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def rotate(frame, rotation):
    """Applies a display rotation of `rotation` degrees counter-clockwise.

    Args:
        frame: uint8 [H, W, C].
        rotation: number. A multiple of 90 (FFmpeg's `av_display_rotation_get`
            sign). Other angles raise `ValueError`.

    Returns:
        uint8 [H', W', C], contiguous.
    """
    quarter = rotation / 90.0
    if abs(quarter - round(quarter)) > 1e-3:
        raise ValueError(
            f"`rotation` must be a multiple of 90 degrees. Received: {rotation=}"
        )
    k = int(round(quarter)) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def resample_indices(timestamps, fps):
    """Indices of the frames shown at times t0, t0 + 1/fps, t0 + 2/fps, ...

    The frame shown at time t is the last one whose timestamp is <= t. The
    output spans the same time as the input: the last input frame lasts one
    mean frame interval, so resampling at the source rate returns every frame.

    Args:
        timestamps: sequence of float, non-decreasing presentation times (s).
        fps: float > 0. Target rate.

    Returns:
        list of int into `timestamps`.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size == 0:
        return []
    if ts.size == 1:
        return [0]
    interval = (ts[-1] - ts[0]) / (ts.size - 1)
    span = ts[-1] - ts[0] + interval
    count = max(1, int(math.floor(span * fps + 1e-6)))
    targets = ts[0] + np.arange(count) / fps
    # A small tolerance absorbs timestamps rounded to the time base.
    tolerance = 1e-3 * min(interval, 1.0 / fps)
    idx = np.searchsorted(ts, targets + tolerance, side="right") - 1
    return np.clip(idx, 0, ts.size - 1).tolist()


def _frame_times(raw_pts, time_base, rate):
    """Seconds per frame from pts; index / rate when pts are unusable.

    AVI (MPEG-4 Part 2 with B-frames) reports pts out of order
    (`mmaction2/test.avi`: 1, 2, 4, 3, ...) although frames come out in
    display order, and some streams have no pts at all: then timestamps are
    rebuilt from the frame index and the average rate.
    """
    usable = all(p is not None for p in raw_pts) and time_base is not None
    if usable:
        times = [float(p * time_base) for p in raw_pts]
        if all(b > a for a, b in zip(times, times[1:])):
            return [t - times[0] for t in times]
    return [i / rate for i in range(len(raw_pts))]


def declared_frames(container, stream):
    """The frame count a file declares: its count, else duration x rate.

    Returns:
        float, or None when the file states neither a count nor a duration
        (or no rate).
    """
    if stream.frames:
        return float(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return seconds * float(rate)


def is_short(decoded, declared):
    """Whether `decoded` frames fall short of `declared` beyond the tolerance."""
    if declared is None:
        return False
    frames, fraction = TRUNCATION_TOLERANCE
    return decoded < declared - max(frames, fraction * declared)


def cut_box(path):
    """How an ISO-BMFF file (MP4, MOV) is cut short, or None.

    Walks the top-level boxes (size, type); a box that runs past the end of
    the file means the file was cut. Not an MP4/MOV, or complete: None.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            box_size, kind = struct.unpack(">I4s", f.read(8))
            if offset == 0 and kind != b"ftyp":
                return None
            if box_size == 1:
                box_size = struct.unpack(">Q", f.read(8))[0]
            elif box_size == 0:  # runs to the end of the file by definition
                return None
            if box_size < 8:
                return None
            if offset + box_size > size:
                name = kind.decode("latin-1")
                return (f"the file ends inside its '{name}' box "
                        f"({size - offset} of {box_size} bytes present)")
            offset += box_size
    return None


def decode_video(path, *, short_side=None, fps=None, max_frames=None,
                 keep_truncated=False):
    """Decodes every frame of a video file to RGB.

    Args:
        path: str or PathLike. Any container/codec FFmpeg reads.
        short_side: int or None. Resize so min(H, W) equals it (after
            rotation). Defaults to None (original size).
        fps: float or None. Resample to this rate by timestamp. Defaults to
            None (every decoded frame).
        max_frames: int or None. Keep at most this many (output) frames; decoding
            stops once they are known. Defaults to None (all).
        keep_truncated: bool. Return the frames of a file that ends early
            (see the module docstring), with the reason in `truncated`,
            instead of raising. Defaults to False.

    Returns:
        `DecodedVideo`; `frames` are uint8 [H, W, 3] RGB.

    Raises:
        VideoDecodeError: the file is missing, not a file, empty, not a
            video, has no video stream, no decodable frame, is truncated
            (reason "truncated: decoded N of about M frames"), or breaks
            while decoding.
        ValueError: a bad argument.
    """
    path = os.fspath(path)
    _check_decode_args(path, short_side=short_side, fps=fps, max_frames=max_frames)
    container = _open(path)
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(
                path, f"no video stream (streams: {', '.join(kinds)})"
            )
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate) if rate else 0.0
        declared = declared_frames(container, stream)
        frames, raw_pts, rotation, stopped, truncated = _decode_frames(
            path, container, stream, short_side=short_side, fps=fps,
            max_frames=max_frames, keep_truncated=keep_truncated, declared=declared)
        time_base = stream.time_base
    if not frames:
        raise VideoDecodeError(path, "no frames decoded")
    if truncated is None and not stopped and is_short(len(frames), declared):
        truncated = (f"truncated: decoded {len(frames)} of about "
                     f"{_about(declared)} frames")
        if not keep_truncated:
            raise VideoDecodeError(path, truncated)
    if source_fps <= 0:
        source_fps = 25.0  # no rate anywhere: times below are then nominal
    times = _frame_times(raw_pts, time_base, source_fps)
    num_decoded = len(frames)
    frames, times, out_fps = _resample(frames, times, fps=fps, max_frames=max_frames,
                                       source_fps=source_fps)
    height, width = frames[0].shape[:2]
    return DecodedVideo(
        frames=frames,
        fps=out_fps,
        height=height,
        width=width,
        source_fps=source_fps,
        rotation=rotation,
        timestamps=times,
        num_decoded=num_decoded,
        truncated=truncated,
    )


def _check_decode_args(path, *, short_side, fps, max_frames):
    """Raises ValueError for a bad argument, VideoDecodeError for a `path`
    that is not a non-empty file."""
    for name, value in (("short_side", short_side), ("max_frames", max_frames)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(
                f"`{name}` must be a positive int or None. Received: {name}={value!r}"
            )
    if fps is not None and not fps > 0:
        raise ValueError(f"`fps` must be > 0 or None. Received: fps={fps!r}")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open(path):
    """`av.open(path)`; a file FFmpeg cannot open raises VideoDecodeError
    (reason "truncated: ..." when an MP4/MOV box is cut)."""
    try:
        return av.open(path)
    except av.FFmpegError as e:
        cut = cut_box(path)
        if cut:
            raise VideoDecodeError(path, f"truncated: decoded 0 frames; {cut}") from e
        raise VideoDecodeError(path, f"cannot open as a video: {e}") from e


def _decode_frames(path, container, stream, *, short_side, fps, max_frames,
                   keep_truncated, declared):
    """Decodes `stream` to RGB frames, stopping once `max_frames` are fixed.

    Returns:
        (frames, raw pts, rotation, stopped early, truncated reason or None);
        a decoding error raises VideoDecodeError unless the file is cut, some
        frames were decoded and `keep_truncated`.
    """
    frames, raw_pts, rotation, stopped, truncated = [], [], 0, False, None
    try:
        for frame in container.decode(stream):
            if not frames:
                rotation = int(round(frame.rotation or 0))
            frames.append(_to_rgb(frame, rotation, short_side))
            raw_pts.append(frame.pts)
            if max_frames is not None and _enough(
                raw_pts, stream.time_base, max_frames, fps
            ):
                stopped = True
                break
    except av.FFmpegError as e:
        failure = f"{type(e).__name__}: {e}"
        cut = cut_box(path)
        if not (cut and frames and keep_truncated):
            raise VideoDecodeError(path, (
                f"truncated: decoded {len(frames)} of about "
                f"{_about(declared)} frames; {cut} ({failure})"
                if cut else
                f"decoding failed after {len(frames)} frames: {failure}"
            )) from e
        truncated = (f"truncated: decoded {len(frames)} of about "
                     f"{_about(declared)} frames; {cut}")
    return frames, raw_pts, rotation, stopped, truncated


def _resample(frames, times, *, fps, max_frames, source_fps):
    """(frames, times, fps) after resampling to `fps` by timestamp (None
    keeps every frame at `source_fps`), then the first `max_frames`."""
    if fps is not None:
        keep = resample_indices(times, fps)
        frames = [frames[i] for i in keep]
        times = [times[0] + i / fps for i in range(len(keep))]
        out_fps = float(fps)
    else:
        out_fps = source_fps
    if max_frames is not None:
        frames, times = frames[:max_frames], times[:max_frames]
    return frames, times, out_fps


def _to_rgb(frame, rotation, short_side):
    """A decoded frame as uint8 RGB, rotated for display, short side resized.

    When shrinking, swscale converts from YUV and shrinks with area averaging
    in one pass (what ffmpeg's CLI does): converting the full-size frame to
    RGB and then resizing with OpenCV took 3x the CPU on 1080p input.
    Enlarging keeps OpenCV's bilinear `resize_short_side`.
    """
    sideways = round(rotation / 90) % 2 == 1
    height, width = (frame.width, frame.height) if sideways else (frame.height,
                                                                  frame.width)
    new_h, new_w = short_side_size(height, width, short_side)
    if new_h * new_w < height * width:
        size = dict(width=new_h, height=new_w) if sideways else dict(width=new_w,
                                                                    height=new_h)
        image = frame.reformat(format="rgb24", interpolation="AREA", **size)
        return rotate(image.to_ndarray(), rotation)
    return resize_short_side(rotate(frame.to_ndarray(format="rgb24"), rotation),
                             short_side)


def _about(declared):
    return "?" if declared is None else round(declared)


def _enough(raw_pts, time_base, max_frames, fps):
    """Whether decoding can stop: `max_frames` output frames are fixed."""
    if fps is None:
        return len(raw_pts) >= max_frames
    # Output frame k is shown at t0 + k / fps; a decoded frame later than the
    # last needed time settles it. Needs pts; without them decode on.
    if raw_pts[0] is None or raw_pts[-1] is None or time_base is None:
        return False
    return float((raw_pts[-1] - raw_pts[0]) * time_base) > (max_frames + 1) / fps


def encode_jpeg(frame, quality=90):
    """Encodes one RGB frame as JPEG.

    Args:
        frame: uint8 [H, W, 3] RGB.
        quality: int in [1, 100]. Defaults to 90.

    Returns:
        bytes, a baseline JPEG (4:2:0) that `tf.io.decode_jpeg` reads as RGB.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            "`frame` must be uint8 [H, W, 3] RGB. "
            f"Received: dtype={frame.dtype}, shape={frame.shape}"
        )
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"`quality` must be in [1, 100]. Received: {quality=}")
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a frame of shape {frame.shape}")
    return buf.tobytes()


def decode_to_jpeg(path, *, short_side=None, fps=None, max_frames=None, quality=90,
                   keep_truncated=False):
    """`decode_video` then `encode_jpeg` per frame: a converter worker's task.

    Returns:
        `EncodedVideo`.

    Raises:
        VideoDecodeError: as `decode_video`.
    """
    video = decode_video(path, short_side=short_side, fps=fps, max_frames=max_frames,
                         keep_truncated=keep_truncated)
    # Optical flow (klassterfork.data.conversion.flow.farneback_frames) would be computed
    # here, from `video.frames`, before they are JPEG-encoded.
    return EncodedVideo(
        frames=[encode_jpeg(f, quality) for f in video.frames],
        fps=video.fps,
        height=video.height,
        width=video.width,
        source_fps=video.source_fps,
        rotation=video.rotation,
        num_decoded=video.num_decoded,
        truncated=video.truncated,
    )
