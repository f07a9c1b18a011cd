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

Writing needs no TensorFlow: `write` encodes the protobuf wire format by hand
and `RecordWriter` frames records as TFRecord files (both byte-identical to
`tf.train.SequenceExample.SerializeToString(deterministic=True)` and
`tf.io.TFRecordWriter`, tested), so converter processes never pay
TensorFlow's 4 s import. `parse` imports TensorFlow when first called.
"""

import struct

import google_crc32c

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


# Protobuf wire format (https://protobuf.dev/programming-guides/encoding/):
# a field is a varint tag (number << 3 | wire type) then its payload; type 2
# is length-delimited (bytes, messages, packed numbers). The messages, from
# tensorflow/core/example/{feature,example}.proto:
#   Feature {bytes_list = 1; float_list = 2; int64_list = 3}, each list a
#   `repeated value = 1` (floats and ints packed); FeatureList {feature = 1};
#   Features {map<string, Feature> feature = 1}; FeatureLists
#   {map<string, FeatureList> feature_list = 1}; a map entry is a message
#   {key = 1; value = 2}; SequenceExample {context = 1; feature_lists = 2}.


def _varint(value):
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: ten-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number, payload):
    """A length-delimited field: tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes(values):
    return _field(1, b"".join(_field(1, v) for v in values))


def _ints(values):
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values))
                  if values else b"")


def _floats(values):
    return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values))
                  if values else b"")


def _map(entries):
    """A proto map field (number 1), in the key order of Python protobuf's
    `deterministic=True` (byte order; of two keys where one is a prefix of
    the other, the longer first), so records compare byte for byte."""
    keys = sorted((key.encode("utf-8") for key in entries), key=_map_order)
    return b"".join(
        _field(1, _field(1, key) + _field(2, entries[key.decode("utf-8")]))
        for key in keys
    )


def _map_order(key):
    # Bytes + 0x100 sorts a prefix after every key that extends it.
    return [*key, 0x100]


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
    lists = {IMAGE: _feature_list(frames)}
    if flow_x is not None:
        if flow_bound is None:
            raise ValueError("`flow_bound` is required when flow is written.")
        context[FLOW_BOUND] = _floats([float(flow_bound)])
        lists[FLOW_X] = _feature_list(flow_x)
        lists[FLOW_Y] = _feature_list(flow_y)
    return _field(1, _map(context)) + _field(2, _map(lists))


def _feature_list(images):
    return b"".join(_field(1, _bytes([bytes(f)])) for f in images)


def _masked_crc(data):
    """TFRecord's checksum: CRC-32C, rotated right 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record):
    """One TFRecord file entry: length, its checksum, the data, its checksum.

    Args:
        record: bytes.

    Returns:
        bytes, what `tf.io.TFRecordWriter.write(record)` appends.
    """
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc(length)) + record
            + struct.pack("<I", _masked_crc(record)))


class RecordWriter:
    """Appends framed records to a binary file object (a TFRecord file).

    Args:
        f: file object opened for binary writing (e.g. `files.atomic_write`).
    """

    def __init__(self, f):
        self.f = f

    def write(self, record):
        self.f.write(frame(record))


def _context_spec():
    import tensorflow as tf

    return {
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
    import tensorflow as tf

    sequence_spec = {IMAGE: tf.io.FixedLenSequenceFeature([], tf.string)}
    if with_flow:
        for key in (FLOW_X, FLOW_Y):
            sequence_spec[key] = tf.io.FixedLenSequenceFeature(
                [], tf.string, allow_missing=True
            )
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_context_spec(), sequence_features=sequence_spec
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
