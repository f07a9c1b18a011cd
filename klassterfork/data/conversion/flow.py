"""Optical flow frames for two-stream models: Farneback (OpenCV) and import.

Quantization (one formula, shared with the `x_/y_` images TSN's `denseflow`
writes, so computed and imported flow decode alike):

    q = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))  # uint8
    f = q * (2 * bound) / 255 - bound                                # dequantize

so 0 px maps to 127.5 (stored as 128 after rounding) and one level is
2 * bound / 255 px (0.157 px at the default bound 20). Each component is a
grayscale JPEG: `flow/x/encoded`, `flow/y/encoded`, with `flow/bound` in the
record context.

Length: T frames give T - 1 flows, flow[t] from frame t to frame t + 1. To
store one flow per frame (records hold T of each), the last flow is repeated:
flow[T - 1] = flow[T - 2]; a one-frame video gets one zero-flow image.
"""

import cv2
import numpy as np

from klassterfork.data.conversion import frames as frames_lib

DEFAULT_BOUND = 20.0
DEFAULT_QUALITY = 95  # denseflow's imwrite default
DEFAULT_PATTERNS = ("x_%05d.jpg", "y_%05d.jpg")
# cv2.calcOpticalFlowFarneback arguments (OpenCV sample / common TSN settings).
FARNEBACK = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
)


def quantize(flow, bound=DEFAULT_BOUND):
    """float flow (any shape, px) -> uint8 by the module's formula."""
    clipped = np.clip(flow, -bound, bound)
    return np.round((clipped + bound) * (255.0 / (2 * bound))).astype(np.uint8)


def dequantize(q, bound=DEFAULT_BOUND):
    """uint8 (any shape) -> float32 flow in px, inverse of `quantize`."""
    return (np.asarray(q, np.float32) * (2 * bound / 255.0) - bound).astype(np.float32)


def farneback(prev_gray, next_gray):
    """Dense flow from `prev_gray` to `next_gray`.

    Args:
        prev_gray, next_gray: uint8 [H, W].

    Returns:
        float32 [H, W, 2] (dx, dy) in px: prev[y, x] ~ next[y + dy, x + dx].
    """
    return cv2.calcOpticalFlowFarneback(prev_gray, next_gray, None, **FARNEBACK)


def align_length(items, num_frames):
    """Pads (repeating the last) or truncates a per-pair list to `num_frames`."""
    if not items:
        raise ValueError("`items` must not be empty.")
    items = list(items[:num_frames])
    return items + [items[-1]] * (num_frames - len(items))


def farneback_frames(frames, *, bound=DEFAULT_BOUND, quality=DEFAULT_QUALITY):
    """Flow JPEGs for a clip, one per frame (see the module docstring).

    Args:
        frames: list of T uint8 RGB [H, W, 3] arrays, already resized.
        bound: float. Clipping bound in px. Defaults to 20.
        quality: int. JPEG quality. Defaults to 95.

    Returns:
        (flow_x, flow_y): two lists of T grayscale JPEG bytes, [H, W].
    """
    if not frames:
        raise ValueError("`frames` must not be empty.")
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    if len(grays) == 1:
        zero = frames_lib.encode_jpeg(
            quantize(np.zeros(grays[0].shape), bound), quality
        )
        return [zero], [zero]
    xs, ys = [], []
    for prev, nxt in zip(grays[:-1], grays[1:]):
        q = quantize(farneback(prev, nxt), bound)
        xs.append(frames_lib.encode_jpeg(np.ascontiguousarray(q[..., 0]), quality))
        ys.append(frames_lib.encode_jpeg(np.ascontiguousarray(q[..., 1]), quality))
    return align_length(xs, len(frames)), align_length(ys, len(frames))


def decode_gray(data, where="flow image"):
    """JPEG bytes -> uint8 [H, W]."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"{where}: not a decodable image ({len(data)} bytes).")
    return image


def read_flow_folder(
    folder,
    patterns=DEFAULT_PATTERNS,
    *,
    short_side=None,
    first_index=1,
    num_flows=None,
    num_frames=None,
    bound=DEFAULT_BOUND,
    quality=DEFAULT_QUALITY,
):
    """Imports existing flow images (`x_00001.jpg`, `y_00001.jpg`, ...).

    The images must use this module's quantization with `bound` (denseflow's
    default is 20). When `short_side` changes the size, each component is
    dequantized, resized, multiplied by the resize factor (flow is measured in
    px of the frame) and quantized again; otherwise the bytes are kept.

    Args:
        folder: str. The frame folder: a local path or a URL (see `fs`).
        patterns: (str, str). File patterns of the x and y components.
        short_side: int or None. Target short side of the stored frames.
        first_index: int. Index of the first flow image.
        num_flows: int or None. How many flow images; None counts them.
        num_frames: int or None. Pad (repeat last) or cut to this many, to
            match the stored frames; None keeps `num_flows`.
        bound: float. Bound the images were written with. Defaults to 20.
        quality: int. JPEG quality when re-encoding.

    Returns:
        (flow_x, flow_y): two equally long lists of grayscale JPEG bytes.

    Raises:
        FileNotFoundError / ValueError: see `frames.frame_paths`; also when
            the x and y counts differ.
    """
    out = []
    for axis, pattern in enumerate(patterns):
        paths = frames_lib.frame_paths(
            folder, pattern, first_index=first_index, num_frames=num_flows
        )
        # Read once (for a URL folder, fetched through `fs`): kept as they
        # are when at the target size, else decoded from these same bytes.
        data = frames_lib.read_bytes(paths)
        kept = frames_lib.kept_jpegs(data, short_side, channels=1)
        if kept is not None:
            out.append(kept[0])
            continue
        jpegs = []
        for path, image in zip(paths, data):
            q = decode_gray(image, path)
            height, width = q.shape
            new_h, new_w = frames_lib.short_side_size(height, width, short_side)
            if (new_h, new_w) != (height, width):
                resized = frames_lib.resize_short_side(dequantize(q, bound), short_side)
                # x scales with the width, y with the height.
                scale = new_w / width if axis == 0 else new_h / height
                q = quantize(resized * scale, bound)
            jpegs.append(frames_lib.encode_jpeg(q, quality))
        out.append(jpegs)
    xs, ys = out
    if len(xs) != len(ys):
        raise ValueError(
            f"{folder}: {len(xs)} x images ({patterns[0]}) but {len(ys)} y images "
            f"({patterns[1]})."
        )
    if num_frames is not None:
        xs, ys = align_length(xs, num_frames), align_length(ys, num_frames)
    return xs, ys
