"""Optical flow for video files (Kinetics, UCF101, ...): decode, then Farneback.

Frame folders either import their `x_/y_` images or compute flow in
`sources.frame_list.encode_entry`; a video file has no flow images, so only
`flow="farneback"` applies: the decoded (resized, resampled) RGB frames go
through `flow.farneback_frames`, the same quantization as every other flow
record (see `klassterfork.data.conversion.flow`).
"""

from klassterfork.data.conversion import flow as flow_lib
from klassterfork.data.conversion import video
from klassterfork.data.conversion.sources import frame_list

FLOW_MODES = ("farneback",)


def decode_to_jpeg_with_flow(
    path,
    *,
    flow,
    flow_bound=flow_lib.DEFAULT_BOUND,
    short_side=None,
    fps=None,
    max_frames=None,
    quality=90,
    keep_truncated=False,
):
    """`video.decode_to_jpeg` plus one Farneback flow image pair per frame.

    Args:
        path: str. The video file.
        flow: str. "farneback" (the only mode for a video file).
        flow_bound: float. Flow clipping bound in px. Defaults to 20.
        short_side, fps, max_frames, quality, keep_truncated: as in
            `video.decode_to_jpeg`; the flow is computed on the frames as
            stored (after resizing and resampling).

    Returns:
        `frame_list.EncodedFrames` with `flow_x`, `flow_y` (T grayscale JPEGs
        each) and `flow_bound`.

    Raises:
        ValueError: `flow` is not "farneback" (e.g. "import": a video file
            has no flow images to import).
        VideoDecodeError: as `video.decode_video`.
    """
    if flow not in FLOW_MODES:
        raise ValueError(
            f"`flow` must be one of {FLOW_MODES} for a video file ({path}); "
            f"'import' reads x_/y_ images of frame folders (--dataset frames). "
            f"Received: flow={flow!r}"
        )
    decoded = video.decode_video(
        path,
        short_side=short_side,
        fps=fps,
        max_frames=max_frames,
        keep_truncated=keep_truncated,
    )
    flow_x, flow_y = flow_lib.farneback_frames(decoded.frames, bound=flow_bound)
    return frame_list.EncodedFrames(
        frames=[video.encode_jpeg(f, quality) for f in decoded.frames],
        fps=decoded.fps,
        height=decoded.height,
        width=decoded.width,
        source_fps=decoded.source_fps,
        rotation=decoded.rotation,
        num_decoded=decoded.num_decoded,
        truncated=decoded.truncated,
        flow_x=flow_x,
        flow_y=flow_y,
        flow_bound=float(flow_bound),
    )
