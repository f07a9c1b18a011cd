"""The SequenceExample schema: write -> parse round trip, aliases, errors."""

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import records


def jpegs(n, h=6, w=8):
    rng = np.random.default_rng(0)
    return [tf.io.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).numpy()
            for _ in range(n)]


def test_round_trip_every_field():
    frames = jpegs(5)
    flow = jpegs(5)
    data = records.write(video_id="abc_000001_000011", frames=frames, labels=[7, 2],
                         label_text="kick;run", fps=29.97, height=6, width=8,
                         source="/videos/abc.mp4", flow_x=flow, flow_y=flow[::-1],
                         flow_bound=20.0)
    out = records.parse(tf.constant(data), with_flow=True)
    assert out["id"].numpy() == b"abc_000001_000011"
    assert out["labels"].numpy().tolist() == [7, 2]
    assert out["label_text"].numpy() == b"kick;run"
    assert int(out["num_frames"]) == 5
    assert float(out["fps"]) == pytest.approx(29.97)
    assert (int(out["height"]), int(out["width"])) == (6, 8)
    assert out["source"].numpy() == b"/videos/abc.mp4"
    assert out["frames"].numpy().tolist() == frames  # bytes kept exactly
    assert out["flow_x"].numpy().tolist() == flow
    assert out["flow_y"].numpy().tolist() == flow[::-1]
    assert float(out["flow_bound"]) == 20.0


def test_unlabelled_video_and_parse_inside_tf_data():
    data = records.write(video_id="t1", frames=jpegs(2), fps=12, height=6, width=8)
    ds = tf.data.Dataset.from_tensors(tf.constant(data)).map(records.parse)
    (out,) = list(ds)
    assert out["labels"].shape == (0,)
    assert out["frames"].shape == (2,)


def test_model_garden_label_alias_and_missing_count():
    # A record written by another tool: label under clip/label/index, no count.
    example = tf.train.SequenceExample()
    example.context.feature[records.LABEL_ALIAS].int64_list.value.append(4)
    lst = example.feature_lists.feature_list[records.IMAGE]
    for f in jpegs(3):
        lst.feature.add().bytes_list.value.append(f)
    out = records.parse(tf.constant(example.SerializeToString()))
    assert out["labels"].numpy().tolist() == [4]
    assert int(out["num_frames"]) == 3  # the list length when the count is absent


def test_write_rejects_bad_input():
    with pytest.raises(ValueError, match="frames"):
        records.write(video_id="x", frames=[], fps=1, height=1, width=1)
    with pytest.raises(ValueError, match="together"):
        records.write(video_id="x", frames=jpegs(1), fps=1, height=6, width=8, flow_x=jpegs(1))
    with pytest.raises(ValueError, match="flow_bound"):
        records.write(video_id="x", frames=jpegs(1), fps=1, height=6, width=8,
                      flow_x=jpegs(1), flow_y=jpegs(1))
    assert records.shard_name("train", 3, 12) == "train-00003-of-00012.tfrecord"
