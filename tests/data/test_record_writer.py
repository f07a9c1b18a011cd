"""The TensorFlow-free record writer against TensorFlow's own writers.

`records.write` encodes protobuf by hand and `records.RecordWriter` frames
TFRecord files by hand; both must be byte-identical to
`tf.train.SequenceExample.SerializeToString(deterministic=True)` and
`tf.io.TFRecordWriter`, which read them back.
"""

import io
import subprocess
import sys

import pytest
import tensorflow as tf

from klassterfork.data import records


def _b(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _i(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _f(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def reference(video_id, frames, labels, label_text, fps, height, width, source,
              flow=None):
    """The same video through TensorFlow's protobuf classes."""
    context = {
        records.VIDEO_ID: _b([video_id.encode()]), records.LABEL: _i(labels),
        records.LABEL_TEXT: _b([label_text.encode()]),
        records.NUM_FRAMES: _i([len(frames)]), records.FPS: _f([fps]),
        records.HEIGHT: _i([height]), records.WIDTH: _i([width]),
        records.SOURCE: _b([source.encode()]),
    }
    lists = {records.IMAGE: tf.train.FeatureList(feature=[_b([f]) for f in frames])}
    if flow is not None:
        context[records.FLOW_BOUND] = _f([flow[2]])
        lists[records.FLOW_X] = tf.train.FeatureList(feature=[_b([f]) for f in flow[0]])
        lists[records.FLOW_Y] = tf.train.FeatureList(feature=[_b([f]) for f in flow[1]])
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    ).SerializeToString(deterministic=True)


CASES = [
    dict(video_id="a/b.mp4", frames=[b"\xff\xd8one", b"two" * 300], labels=[],
         label_text="", fps=29.97, height=128, width=171, source="/x/a/b.mp4"),
    dict(video_id="clip é", frames=[b"x" * 200_000], labels=[3],
         label_text="chat é", fps=12.0, height=240, width=427, source=""),
    dict(video_id="m", frames=[b"a", b"b", b"c"], labels=[0, 127, 128, 2**40, -1],
         label_text="a;b", fps=0.5, height=1, width=1, source="s"),
]


@pytest.mark.parametrize("case", CASES, ids=["unlabelled", "big_frame", "varints"])
def test_write_is_byte_identical_to_tensorflow_protobuf(case):
    assert records.write(**case) == reference(**case)


def test_write_with_flow_is_byte_identical():
    case = dict(CASES[0])
    flow = ([b"fx1", b"fx2"], [b"fy1", b"fy2"], 20.0)
    got = records.write(**case, flow_x=flow[0], flow_y=flow[1], flow_bound=flow[2])
    assert got == reference(**case, flow=flow)


def test_crc32c_check_value():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # RFC 3720 B.4


def test_framing_is_byte_identical_to_tf_record_writer(tmp_path):
    serialized = [records.write(**case) for case in CASES] + [b""]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for s in serialized:
            writer.write(s)
    buffer = io.BytesIO()
    ours = records.RecordWriter(buffer)
    for s in serialized:
        ours.write(s)
    assert buffer.getvalue() == (tmp_path / "tf.tfrecord").read_bytes()
    (tmp_path / "ours.tfrecord").write_bytes(buffer.getvalue())
    read = list(tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord")))
    assert [r.numpy() for r in read] == serialized
    parsed = records.parse(read[2])
    assert parsed["labels"].numpy().tolist() == [0, 127, 128, 2**40, -1]
    assert parsed["frames"].numpy().tolist() == [b"a", b"b", b"c"]


def test_writing_records_does_not_import_tensorflow():
    code = ("import sys; from klassterfork.data import records; "
            "records.frame(records.write(video_id='a', frames=[b'x'], fps=1, "
            "height=1, width=1)); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120).stdout
    assert out.split() == ["False"]
