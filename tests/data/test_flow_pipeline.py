"""Two-stream flow input: L stored flow pairs -> one (1, S, S, 2L) step, x and y
interleaved, the crop window shared, and a horizontal flip negating x-flow."""

import numpy as np
import tensorflow as tf

from klassterfork.data import pipeline, records

T, H, W = 6, 16, 20


def flow_jpeg(value):
    # Flat grey images survive JPEG exactly: the value is the index code.
    return tf.io.encode_jpeg(tf.fill([H, W, 1], tf.constant(value, tf.uint8)),
                             quality=100).numpy()


def write_record(path):
    rgb = [tf.io.encode_jpeg(tf.zeros([H, W, 3], tf.uint8)).numpy() for _ in range(T)]
    xs = [flow_jpeg(10 + t) for t in range(T)]   # x code of pair t: 10 + t
    ys = [flow_jpeg(100 + t) for t in range(T)]  # y code of pair t: 100 + t
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(records.write(video_id="v", frames=rgb, labels=[1], fps=25, height=H, width=W,
                              flow_x=xs, flow_y=ys, flow_bound=20.0))


def test_train_flow_clips_are_stacked_pairs(tmp_path):
    path = tmp_path / "train-00000-of-00001.tfrecord"
    write_record(path)
    for flip_prob, expect_x in ((0.0, lambda t: 10 + t), (1.0, lambda t: 255 - (10 + t))):
        ds = pipeline.train_dataset(str(path), clip_len=3, crop_size=12, batch_size=1, seed=0,
                                    modality="flow", standardize="none", flip_prob=flip_prob,
                                    shuffle_buffer=0)
        clips, labels = next(iter(ds))
        assert clips.shape == (1, 1, 12, 12, 6) and clips.dtype == tf.uint8
        codes = clips.numpy()[0, 0].reshape(-1, 6)
        assert (codes == codes[0]).all()  # the same value over the whole window
        xs, ys = codes[0, 0::2].astype(int), codes[0, 1::2].astype(int)
        start = ys[0] - 100
        assert list(ys) == [100 + start + i for i in range(3)]  # consecutive pairs
        assert list(xs) == [expect_x(start + i) for i in range(3)]
        assert int(labels[0]) == 1


def test_eval_flow_views(tmp_path):
    path = tmp_path / "val-00000-of-00001.tfrecord"
    write_record(path)
    ds = pipeline.eval_dataset(str(path), clip_len=2, crop_size=12, num_clips=2, num_crops=3,
                               batch_size=1, modality="flow", standardize="none")
    views, _ = next(iter(ds))
    assert views.shape == (1, 6, 1, 12, 12, 4)
    v = views.numpy()[0, :, 0, 0, 0, :].astype(int)  # (views, 4 channels)
    assert (v[:, 1] - v[:, 0] == 90).all() and (v[:, 3] - v[:, 2] == 90).all()
    assert (v[:, 2] == v[:, 0] + 1).all()  # x of the next pair


def test_stack_flow_order():
    clip = tf.reshape(tf.range(2 * 1 * 1 * 2), [2, 1, 1, 2])  # t, y, x, (fx, fy)
    np.testing.assert_array_equal(pipeline.stack_flow(clip).numpy().reshape(-1), [0, 1, 2, 3])
