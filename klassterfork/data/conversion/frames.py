"""Frame folders: videos already extracted to one image per frame.

A folder holds `img_00001.jpg`, `img_00002.jpg`, ... (the TSN / mmaction2
layout, `pattern="img_%05d.jpg"`, first index 1) or any numbered pattern
(SSv2 frame dumps use `%04d.jpg`, TDN `{:06d}.jpg`). Patterns are printf
(`%05d`) or `str.format` (`{:05d}`, `{:05}`, `{}`) style, with one index.

The converter either keeps the JPEG bytes as they are (`jpegs_if_target_size`:
frames that are already RGB JPEGs with the target short side are stored
without re-encoding, so no generation loss) or decodes, resizes the short
side and re-encodes (`frame_folder_jpegs` does whichever applies).

Images are decoded with OpenCV ignoring EXIF orientation, as
`tf.io.decode_jpeg` does, so both paths give the same pixels.

A folder may be a URL (`gs://b/frames/v1`, `memory://...`): it is listed and
its images read through the converter's filesystem layer (`fs`), the bytes
decoded as for a local folder; a local folder keeps the plain `os` calls.
"""

import dataclasses
import re

import cv2
import numpy as np

# One resize rule for videos and frame folders (re-exported for flow.py).
from klassterfork.data.conversion import fs, video
from klassterfork.data.conversion.video import resize_short_side, short_side_size

__all__ = [
    "frame_paths",
    "read_frame_folder",
    "read_jpeg_bytes_if_target_size",
    "frame_folder_jpegs",
    "jpegs_if_target_size",
    "kept_jpegs",
    "jpeg_header",
    "decode_rgb",
    "read_bytes",
    "encode_jpeg",
    "resize_short_side",
    "short_side_size",
]

DEFAULT_PATTERN = "img_%05d.jpg"
DEFAULT_QUALITY = 90
_PRINTF = re.compile(r"%(0?\d*)d")
_FORMAT = re.compile(r"\{(?::(0?\d*)d?)?\}")
# SOF markers carry the frame size; C4 (DHT), C8 (JPG), CC (DAC) do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def format_index(pattern, index):
    """`format_index("img_%05d.jpg", 3) == format_index("img_{:05d}.jpg", 3)
    == "img_00003.jpg"`."""
    if _PRINTF.search(pattern):
        return pattern % index
    if _FORMAT.search(pattern):
        return pattern.format(index)
    raise ValueError(
        "`pattern` must contain one index placeholder such as %05d or {:05d}. "
        f"Received: pattern={pattern!r}"
    )


def _pattern_regex(pattern):
    """Regex with one group matching the index of `pattern`'s file names."""
    for placeholder in (_PRINTF, _FORMAT):
        m = placeholder.search(pattern)
        if m:
            head, tail = pattern[: m.start()], pattern[m.end() :]
            if placeholder is _PRINTF:
                head, tail = head.replace("%%", "%"), tail.replace("%%", "%")
            return re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$")
    format_index(pattern, 0)  # raises the error
    return None


def frame_paths(folder, pattern=DEFAULT_PATTERN, *, first_index=1, num_frames=None):
    """Paths of a folder's frames in time order.

    Args:
        folder: str. The frame folder: a local path or a URL.
        pattern: str. File name with one index placeholder.
        first_index: int. Index of the first frame (1 for `img_00001.jpg`;
            mmaction2's `start_index` plus the list's offset).
        num_frames: int or None. Number of frames; None counts the files
            matching `pattern` from `first_index` on, which must then be
            numbered without gaps.

    Returns:
        list of str, `num_frames` paths.

    Raises:
        FileNotFoundError: the folder is missing or has no matching frame.
        ValueError: the numbering has a gap (when counting).
    """
    if num_frames is not None:
        return [
            fs.join(folder, format_index(pattern, first_index + i))
            for i in range(num_frames)
        ]
    if not fs.isdir(folder):
        raise FileNotFoundError(f"frame folder not found: {folder}")
    regex = _pattern_regex(pattern)
    indices = sorted(
        int(m.group(1))
        for m in map(regex.match, fs.listdir(folder))
        if m and int(m.group(1)) >= first_index
    )
    if not indices or indices[0] != first_index:
        raise FileNotFoundError(
            f"{folder}: no frame {format_index(pattern, first_index)!r} "
            f"(pattern {pattern!r}, first_index={first_index})."
        )
    for expected, index in enumerate(indices, first_index):
        if index != expected:
            last = format_index(pattern, indices[-1])
            raise ValueError(
                f"{folder}: frame {format_index(pattern, expected)!r} is missing "
                f"but later frames exist (up to {last!r})."
            )
    return [fs.join(folder, format_index(pattern, i)) for i in indices]


def jpeg_header(data):
    """(height, width, channels) from a JPEG's SOF segment, without decoding.

    Returns:
        tuple of int, or None when `data` is not a JPEG.
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            seg = data[pos + 4 : pos + 4 + 6]
            if len(seg) < 6:
                return None
            height = int.from_bytes(seg[1:3], "big")
            width = int.from_bytes(seg[3:5], "big")
            return height, width, seg[5]
        if marker in (0xD9, 0xDA):  # end of image / start of scan before SOF
            return None
        pos += 2 + length
    return None


def decode_rgb(data, where="image"):
    """Decodes JPEG/PNG bytes to uint8 RGB [H, W, 3]; EXIF orientation ignored."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError(f"{where}: not a decodable image ({len(data)} bytes).")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(image, quality=DEFAULT_QUALITY):
    """uint8 RGB [H, W, 3] or grayscale [H, W] -> JPEG bytes (gray stays 1 channel).

    RGB goes through `video.encode_jpeg`, the converter's one RGB encoder.
    """
    if image.ndim == 3:
        return video.encode_jpeg(image, quality)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}.")
    return buf.tobytes()


def read_bytes(paths):
    """The files' contents, in order (local paths or URLs, see `fs.read_files`)."""
    return fs.read_files(paths)


def read_frame_folder(
    folder, pattern=DEFAULT_PATTERN, *, short_side=None, first_index=1, num_frames=None
):
    """Decodes a frame folder.

    Args:
        folder, pattern, first_index, num_frames: see `frame_paths`.
        short_side: int or None. Resize so the short side has this length.

    Returns:
        list of T uint8 RGB arrays [H, W, 3], all the same size.

    Raises:
        FileNotFoundError: a frame is missing. ValueError: a frame does not
        decode, or frames differ in size.
    """
    paths = frame_paths(folder, pattern, first_index=first_index, num_frames=num_frames)
    frames = []
    for path, data in zip(paths, read_bytes(paths)):
        frames.append(resize_short_side(decode_rgb(data, path), short_side))
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"{folder}: frames differ in size: {sorted(sizes)}")
    return frames


def jpegs_if_target_size(paths, short_side, channels=3):
    """The files' bytes, if every one is a JPEG that needs no re-encoding.

    That is: a JPEG with `channels` components, all frames the same size, and
    min(height, width) == short_side (any size when short_side is None).

    Args:
        paths: list of str. Frame files in time order.
        short_side: int or None.
        channels: int. 3 for RGB frames, 1 for grayscale flow images.

    Returns:
        (list of bytes, height, width), or None when any frame would need
        decoding (not JPEG, other size, other channel count).
    """
    return kept_jpegs(read_bytes(paths), short_side, channels)


def kept_jpegs(data, short_side, channels=3):
    """`jpegs_if_target_size` on bytes already read (`data`: list of bytes),
    for a caller that decodes the same bytes when they cannot be kept."""
    headers = {jpeg_header(d) for d in data}
    if len(headers) != 1:
        return None
    header = headers.pop()
    if header is None or header[2] != channels:
        return None
    height, width = header[:2]
    if short_side is not None and min(height, width) != short_side:
        return None
    return data, height, width


def read_jpeg_bytes_if_target_size(
    folder, pattern=DEFAULT_PATTERN, *, short_side=None, first_index=1, num_frames=None
):
    """`jpegs_if_target_size` for a frame folder (see `frame_paths`)."""
    paths = frame_paths(folder, pattern, first_index=first_index, num_frames=num_frames)
    return jpegs_if_target_size(paths, short_side)


@dataclasses.dataclass
class FolderFrames:
    """A frame folder ready for `records.write`.

    Attributes:
        jpegs: list of T bytes, RGB JPEG per frame.
        height, width: int. Size of the stored frames.
        reencoded: bool. False when the original files were kept.
        frames: list of T uint8 RGB [H, W, 3] arrays when decoded (re-encoded
            or `decode=True`), else None.
    """

    jpegs: list
    height: int
    width: int
    reencoded: bool
    frames: list | None = None


def frame_folder_jpegs(
    folder,
    pattern=DEFAULT_PATTERN,
    *,
    short_side=None,
    first_index=1,
    num_frames=None,
    quality=DEFAULT_QUALITY,
    decode=False,
):
    """A frame folder as JPEGs at the target size; the converter's one call.

    Keeps the original bytes when they already are RGB JPEGs with the target
    short side; otherwise decodes, resizes and re-encodes at `quality`.

    Args:
        folder, pattern, first_index, num_frames: see `frame_paths`.
        short_side: int or None. Target short side; None keeps the size.
        quality: int. JPEG quality when re-encoding. Defaults to 90.
        decode: bool. Also return the decoded frames (for optical flow).

    Returns:
        FolderFrames.
    """
    paths = frame_paths(folder, pattern, first_index=first_index, num_frames=num_frames)
    kept = jpegs_if_target_size(paths, short_side)
    if kept is not None:
        jpegs, height, width = kept
        frames = None
        if decode:
            frames = [decode_rgb(d, p) for p, d in zip(paths, jpegs)]
        return FolderFrames(jpegs, height, width, reencoded=False, frames=frames)
    frames = read_frame_folder(
        folder,
        pattern,
        short_side=short_side,
        first_index=first_index,
        num_frames=len(paths),
    )
    jpegs = [encode_jpeg(f, quality) for f in frames]
    height, width = frames[0].shape[:2]
    return FolderFrames(jpegs, height, width, reencoded=True, frames=frames)
