"""The TFRecord schema: one `tf.train.SequenceExample` per video.

This module is the ONE place that knows the feature keys; the converter
writes through `write` and every pipeline reads through `parse`.

Context:
    video/id          bytes   dataset's video id
    video/label       int64[] class indices (empty for unlabelled test videos)
    video/label_text  bytes   class name(s), ";"-joined
    video/num_frames  int64   frames stored (counted by decoding)
    video/fps         float   frames per second of the stored frames
    video/height      int64   stored frame height
    video/width       int64   stored frame width
    video/source      bytes   original path
    flow/bound        float   optional: flow clipped to [-bound, bound]
Feature lists:
    image/encoded     bytes   one RGB JPEG per frame
    flow/x/encoded    bytes   optional: 8-bit JPEG horizontal flow per frame
    flow/y/encoded    bytes   optional: 8-bit JPEG vertical flow per frame

TF Model Garden's video SequenceExample shares `image/encoded` and stores the
label as `clip/label/index`; `parse` accepts that alias.
"""

import tensorflow as tf

VIDEO_ID = "video/id"
LABEL = "video/label"
LABEL_TEXT = "video/label_text"
NUM_FRAMES = "video/num_frames"
FPS = "video/fps"
HEIGHT = "video/height"
WIDTH = "video/width"
SOURCE = "video/source"
FLOW_BOUND = "flow/bound"
IMAGE = "image/encoded"
FLOW_X = "flow/x/encoded"
FLOW_Y = "flow/y/encoded"
LABEL_ALIAS = "clip/label/index"  # TF Model Garden


def shard_name(split, index, count):
    """`{split}-{index:05d}-of-{count:05d}.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _text(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def write(
    *,
    video_id,
    frames,
    labels=(),
    label_text="",
    fps,
    height,
    width,
    source="",
    flow_x=None,
    flow_y=None,
    flow_bound=None,
):
    """Serializes one video.

    Args:
        video_id: str.
        frames: list of bytes. One encoded RGB JPEG per frame, in time order.
        labels: sequence of int. Class indices; empty for unlabelled videos.
        label_text: str. Class name(s).
        fps: float. Frame rate of `frames`.
        height, width: int. Size of the stored frames.
        source: str. Original file path.
        flow_x, flow_y: optional lists of bytes, JPEG flow per frame.
        flow_bound: float. Required with flow: the clipping bound.

    Returns:
        bytes, a serialized `tf.train.SequenceExample`.
    """
    if not frames:
        raise ValueError(f"`frames` must not be empty. Received: video_id={video_id!r}")
    if (flow_x is None) != (flow_y is None):
        raise ValueError("`flow_x` and `flow_y` must be given together.")
    context = {
        VIDEO_ID: _bytes([_text(video_id)]),
        LABEL: _ints([int(x) for x in labels]),
        LABEL_TEXT: _bytes([_text(label_text)]),
        NUM_FRAMES: _ints([len(frames)]),
        FPS: _floats([float(fps)]),
        HEIGHT: _ints([int(height)]),
        WIDTH: _ints([int(width)]),
        SOURCE: _bytes([_text(source)]),
    }
    lists = {IMAGE: tf.train.FeatureList(feature=[_bytes([f]) for f in frames])}
    if flow_x is not None:
        if flow_bound is None:
            raise ValueError("`flow_bound` is required when flow is written.")
        context[FLOW_BOUND] = _floats([float(flow_bound)])
        lists[FLOW_X] = tf.train.FeatureList(feature=[_bytes([f]) for f in flow_x])
        lists[FLOW_Y] = tf.train.FeatureList(feature=[_bytes([f]) for f in flow_y])
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )
    return example.SerializeToString()


_CONTEXT_SPEC = {
    VIDEO_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LABEL: tf.io.VarLenFeature(tf.int64),
    LABEL_ALIAS: tf.io.VarLenFeature(tf.int64),
    LABEL_TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    FPS: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    SOURCE: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FLOW_BOUND: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
}


def parse(serialized, *, with_flow=False):
    """Parses one serialized video; works eagerly and inside `tf.data`.

    Args:
        serialized: scalar string tensor.
        with_flow: bool. Also return `flow_x`, `flow_y` (empty if absent).

    Returns:
        dict: `id` (string), `labels` (int64 [L]), `label_text` (string),
        `num_frames` (int64; number of stored frames), `fps` (float32),
        `height`, `width` (int64), `source` (string), `frames` (string [T],
        encoded JPEGs), and with `with_flow` also `flow_x`, `flow_y`
        (string [T]) and `flow_bound` (float32).
    """
    sequence_spec = {IMAGE: tf.io.FixedLenSequenceFeature([], tf.string)}
    if with_flow:
        for key in (FLOW_X, FLOW_Y):
            sequence_spec[key] = tf.io.FixedLenSequenceFeature(
                [], tf.string, allow_missing=True
            )
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_CONTEXT_SPEC, sequence_features=sequence_spec
    )
    labels = tf.concat(
        [tf.sparse.to_dense(context[LABEL]), tf.sparse.to_dense(context[LABEL_ALIAS])],
        axis=0,
    )
    frames = sequence[IMAGE]
    num_frames = context[NUM_FRAMES]
    # Records from other writers may leave out the count: the list length is truth.
    num_frames = tf.where(
        num_frames < 0, tf.cast(tf.shape(frames)[0], tf.int64), num_frames
    )
    out = {
        "id": context[VIDEO_ID],
        "labels": labels,
        "label_text": context[LABEL_TEXT],
        "num_frames": num_frames,
        "fps": context[FPS],
        "height": context[HEIGHT],
        "width": context[WIDTH],
        "source": context[SOURCE],
        "frames": frames,
    }
    if with_flow:
        out["flow_x"] = sequence[FLOW_X]
        out["flow_y"] = sequence[FLOW_Y]
        out["flow_bound"] = context[FLOW_BOUND]
    return out
