"""Clip sampling: which frame indices a clip uses.

Samplers return frame *indices* (int32) so that the pipeline gathers and
decodes only the JPEGs a clip needs. Randomness is stateless: a random
sampler takes an int `seed` of shape [2] and the same seed gives the same
indices.
"""

import tensorflow as tf

from klassterfork.data.transforms.checks import check_choice, check_positive

# Short videos: "repeat" repeats the last frame, "loop" wraps to the start.
SHORT_VIDEO_MODES = ("repeat", "loop")


def fit_indices(indices, num_frames, *, short_video="repeat"):
    """Maps indices that may run past the end of a video onto its frames.

    Args:
        indices: int32 [...]. Non-negative frame indices.
        num_frames: int32 scalar. Frames in the video (>= 1).
        short_video: str. "repeat": indices past the end take the last frame;
            "loop": they wrap around to the start. Defaults to "repeat".

    Returns:
        int32 [...], every value in [0, num_frames).
    """
    check_choice(short_video, SHORT_VIDEO_MODES, "short_video")
    num_frames = tf.cast(num_frames, tf.int32)
    if short_video == "repeat":
        return tf.minimum(indices, num_frames - 1)
    return indices % num_frames


def random_clip_indices(
    num_frames, seed, *, clip_len, frame_step=1, short_video="repeat"
):
    """Indices of a clip of `clip_len` frames, `frame_step` apart, random start.

    The start is uniform over every position where the whole clip fits; a
    video shorter than the clip's span starts at 0 and its missing frames are
    filled as `short_video` says (see `fit_indices`).

    Args:
        num_frames: int scalar. Frames in the video.
        seed: int [2]. Stateless seed.
        clip_len: int. Frames per clip.
        frame_step: int or int32 scalar. Distance between sampled frames.
            Defaults to 1.
        short_video: str. "repeat" (last frame) or "loop". Defaults to "repeat".

    Returns:
        int32 [clip_len].
    """
    check_positive(clip_len, "clip_len")
    num_frames = tf.cast(num_frames, tf.int32)
    frame_step = tf.cast(frame_step, tf.int32)
    span = (clip_len - 1) * frame_step + 1
    max_start = tf.maximum(num_frames - span, 0)
    start = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
    )
    indices = start + tf.range(clip_len, dtype=tf.int32) * frame_step
    return fit_indices(indices, num_frames, short_video=short_video)


def even_clip_indices(
    num_frames, *, clip_len, num_clips, frame_step=1, short_video="repeat"
):
    """Indices of `num_clips` clips evenly spaced over the video (evaluation).

    The video's valid start range `[0, num_frames - span]` (span =
    (clip_len - 1) * frame_step + 1) is cut into `num_clips` equal parts and
    each clip starts at the centre of its part (mmaction2 `SampleFrames`
    test mode): start_i = floor(d * (i + 0.5)), d = (num_frames - span + 1) /
    num_clips. Short videos start every clip at 0.

    Args:
        num_frames: int scalar. Frames in the video.
        clip_len: int. Frames per clip.
        num_clips: int. Clips per video.
        frame_step: int. Distance between sampled frames. Defaults to 1.
        short_video: str. "repeat" or "loop". Defaults to "repeat".

    Returns:
        int32 [num_clips, clip_len].
    """
    check_positive(clip_len, "clip_len")
    check_positive(num_clips, "num_clips")
    check_positive(frame_step, "frame_step")
    num_frames = tf.cast(num_frames, tf.int32)
    span = (clip_len - 1) * frame_step + 1
    room = tf.cast(tf.maximum(num_frames - span + 1, 1), tf.float64)
    part = room / num_clips
    starts = tf.cast(
        tf.floor(part * (tf.range(num_clips, dtype=tf.float64) + 0.5)), tf.int32
    )
    indices = starts[:, None] + tf.range(clip_len, dtype=tf.int32)[None, :] * frame_step
    return fit_indices(indices, num_frames, short_video=short_video)


def random_frame_step(seed, choices):
    """One frame step drawn uniformly from `choices` (fps jitter).

    `choices=(1, 2)` samples at the stored rate or half of it; fractional
    steps resample the frame rate, e.g. fps x {1, .75, .5} is
    `choices=(1, 4 / 3, 2)` (frames taken at floor(i * step)).

    Args:
        seed: int [2]. Stateless seed.
        choices: non-empty sequence of positive numbers.

    Returns:
        float32 scalar.
    """
    values = [float(c) for c in choices]
    if not values or min(values) <= 0:
        raise ValueError(
            f"`frame_step` choices must be positive numbers. Received: {choices!r}"
        )
    pick = tf.random.stateless_uniform([], seed, 0, len(values), dtype=tf.int32)
    return tf.gather(tf.constant(values, tf.float32), pick)


def stepped_clip_indices(
    num_frames, seed, *, clip_len, frame_step, short_video="repeat"
):
    """`random_clip_indices` for a float step: frames start + floor(i * step).

    Args:
        num_frames: int scalar.
        seed: int [2].
        clip_len: int.
        frame_step: float32 scalar > 0.
        short_video: "repeat" or "loop".

    Returns:
        int32 [clip_len].
    """
    check_positive(clip_len, "clip_len")
    num_frames = tf.cast(num_frames, tf.int32)
    offsets = tf.cast(
        tf.floor(
            tf.range(clip_len, dtype=tf.float32) * tf.cast(frame_step, tf.float32)
        ),
        tf.int32,
    )
    max_start = tf.maximum(num_frames - offsets[-1] - 1, 0)
    start = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
    )
    return fit_indices(start + offsets, num_frames, short_video=short_video)


def segment_indices(
    num_frames, seed=None, *, num_segments, new_length=1, clip=0, num_clips=1
):
    """TSN segment sampling: `new_length` consecutive frames per segment.

    The video (less the `new_length - 1` frames a snippet needs) is split
    into `num_segments` equal segments (Wang et al., ECCV 2016; TDN uses
    new_length=5). Train (`seed` given), as TSN's `_sample_indices`: with
    d = (T - new_length + 1) // num_segments, d > 0: offset_i = i * d +
    uniform[0, d); else if T > num_segments: sorted uniform offsets; else 0.
    Eval (`seed=None`), as TSN's `_get_test_indices`: offset_i =
    floor(tick / 2 + tick * i), tick = (T - new_length + 1) / num_segments.
    With `num_clips` > 1 (eval only), clip k shifts every offset to
    floor(tick * (i + (k + 0.5) / num_clips)); k = 0 of 1 is TSN's centre.
    Snippet frames past the end repeat the last frame.

    Args:
        num_frames: int scalar.
        seed: int [2] for random (train) offsets, None for segment centres.
        num_segments: int.
        new_length: int. Consecutive frames per segment. Defaults to 1.
        clip, num_clips: ints, eval only. Which of `num_clips` evenly
            shifted clips. Defaults to 0 of 1.

    Returns:
        int32 [num_segments * new_length], segment-major.
    """
    check_positive(num_segments, "num_segments")
    check_positive(new_length, "new_length")
    num_frames = tf.cast(num_frames, tf.int32)
    usable = num_frames - new_length + 1
    segments = tf.range(num_segments, dtype=tf.int32)
    if seed is None:
        tick = tf.cast(tf.maximum(usable, 1), tf.float64) / num_segments
        shift = (clip + 0.5) / num_clips
        offsets = tf.cast(
            tf.floor(tick * (tf.cast(segments, tf.float64) + shift)), tf.int32
        )
        offsets = tf.where(usable > 0, offsets, 0)
    else:
        duration = usable // num_segments
        seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        jitter = tf.random.stateless_uniform(
            [num_segments], seed_a, 0, tf.maximum(duration, 1), dtype=tf.int32
        )
        regular = segments * duration + jitter
        scattered = tf.sort(
            tf.random.stateless_uniform(
                [num_segments], seed_b, 0, tf.maximum(usable, 1), dtype=tf.int32
            )
        )
        offsets = tf.where(
            duration > 0,
            regular,
            tf.where(num_frames > num_segments, scattered, tf.zeros_like(segments)),
        )
    indices = offsets[:, None] + tf.range(new_length, dtype=tf.int32)[None, :]
    return tf.minimum(tf.reshape(indices, [-1]), num_frames - 1)


# --- Issue 3: more crops -----------------------------------------------------


def train_clip_indices(num_frames, sampling, seed_clip, seed_step):
    """The frame indices of one training clip, as `sampling` says.

    TSN segments when `sampling.num_segments` is set, else one clip of
    `sampling.clip_len` frames at a fixed step or, with a list of steps,
    at a step drawn per clip (fps jitter).

    Args:
        num_frames: int scalar tensor. Frames in the video.
        sampling: `spec.Sampling` (clip_len, frame_step, num_segments,
            new_length, short_video, step_choices).
        seed_clip, seed_step: int [2]. Stateless seeds of the clip start /
            segment offsets and of the step draw.

    Returns:
        int32 [clip_len]: indices into the video's frames.
    """
    if sampling.num_segments is not None:
        return segment_indices(num_frames, seed_clip, num_segments=sampling.num_segments,
                               new_length=sampling.new_length)
    if sampling.step_choices is not None:
        return stepped_clip_indices(
            num_frames, seed_clip, clip_len=sampling.clip_len,
            short_video=sampling.short_video,
            frame_step=random_frame_step(seed_step, sampling.step_choices))
    return random_clip_indices(num_frames, seed_clip, clip_len=sampling.clip_len,
                               frame_step=sampling.frame_step,
                               short_video=sampling.short_video)
