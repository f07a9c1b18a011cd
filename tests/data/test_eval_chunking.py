"""`eval_dataset(views_per_chunk=K)`: chunks of views reassemble bitwise to
the unchunked views, each unique frame is decoded once per video, batches are
bounded by B * K views, and per-video averaged scores equal the unchunked
ones."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data.reading import clips
from klassterfork.data import pipeline, records
from klassterfork.evaluation import aggregate

H, W = 24, 32
CLIP_LEN, CROP = 4, 16
# (frames, label): a short video (clips repeat its last frame), one where
# the clips overlap, one long enough for disjoint clips.
VIDEOS = [(3, 0), (17, 1), (45, 2), (9, 1), (30, 0)]


def write_videos(directory, videos=VIDEOS, seed=0):
    rng = np.random.default_rng(seed)
    path = str(directory / records.shard_name("validation", 0, 1))
    with tf.io.TFRecordWriter(path) as writer:
        for i, (num_frames, label) in enumerate(videos):
            frames = rng.integers(0, 256, size=(num_frames, H, W, 3), dtype=np.uint8)
            writer.write(records.write(
                video_id=f"v{i}",
                frames=[tf.io.encode_jpeg(f, quality=90).numpy() for f in frames],
                labels=[label], fps=12.0, height=H, width=W,
            ))
    return [path]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("chunks"))


def make(paths, num_clips, num_crops, views_per_chunk=None, **kwargs):
    options = dict(clip_len=CLIP_LEN, crop_size=CROP, num_clips=num_clips,
                   num_crops=num_crops, frame_step=2, with_ids=True)
    options.update(kwargs)
    options.setdefault("batch_size", 2)
    return pipeline.eval_dataset(paths, views_per_chunk=views_per_chunk, **options)


def reassemble(ds, num_views):
    """Chunked batches -> {video_index: (views [V, ...], label, id)}.

    Checks on the way: every view slot is filled exactly once, padding views
    are zeros, a video's chunks are consecutive and agree on label and id.
    """
    videos, order = {}, []
    for clips, labels, ids, chunks in ds:
        clips = clips.numpy()
        for b in range(clips.shape[0]):
            video = int(chunks["video_index"][b])
            offset = int(chunks["view_offset"][b])
            mask = chunks["view_mask"][b].numpy()
            if not order or order[-1] != video:
                assert video not in videos, "chunks of a video are not consecutive"
                order.append(video)
                videos[video] = [np.zeros((num_views,) + clips.shape[2:], clips.dtype),
                                 np.zeros(num_views, bool), int(labels[b]), ids[b]]
            views, filled, label, vid = videos[video]
            assert (label, vid) == (int(labels[b]), ids[b])
            slots = offset + np.nonzero(mask)[0]
            # Valid views first, then padding; padding only past V.
            valid = np.arange(len(mask)) < num_views - offset
            np.testing.assert_array_equal(mask, valid)
            assert not filled[slots].any()
            filled[slots] = True
            views[slots] = clips[b][mask]
            assert not clips[b][~mask].any()
    assert order == list(range(len(order)))
    for views, filled, _, _ in videos.values():
        assert filled.all()
    return [(v[0], v[2], v[3]) for _, v in sorted(videos.items())]


def unchunked(ds):
    clips, labels, ids = (np.concatenate([x.numpy() for x in parts])
                          for parts in zip(*ds))
    return clips, labels, ids


@pytest.mark.parametrize(
    "num_clips,num_crops,views_per_chunk,standardize",
    [(10, 3, 10, "none"), (10, 3, 7, "per_frame"), (25, 1, 5, "none"),
     (25, 1, 25, "unit"), (2, 3, 4, "none"), (2, 3, 1, "per_frame")],
)
def test_chunks_reassemble_bitwise_to_the_unchunked_views(
    paths, num_clips, num_crops, views_per_chunk, standardize
):
    num_views = num_clips * num_crops
    clips, labels, ids = unchunked(
        make(paths, num_clips, num_crops, standardize=standardize))
    assert clips.shape == (len(VIDEOS), num_views, CLIP_LEN, CROP, CROP, 3)
    got = reassemble(make(paths, num_clips, num_crops, views_per_chunk,
                          standardize=standardize), num_views)
    assert len(got) == len(VIDEOS)
    for n, (views, label, vid) in enumerate(got):
        assert (label, vid) == (labels[n], ids[n])
        np.testing.assert_array_equal(views, clips[n])  # bitwise


def test_element_spec_and_batches_bounded_by_batch_times_chunk(paths):
    ds = make(paths, 10, 3, views_per_chunk=4, batch_size=3)
    clips_spec, labels_spec, ids_spec, chunk_spec = ds.element_spec
    assert clips_spec.shape.as_list() == [None, 4, CLIP_LEN, CROP, CROP, 3]
    assert clips_spec.dtype == tf.float32
    assert chunk_spec["view_mask"].shape.as_list() == [None, 4]
    assert chunk_spec["video_index"].dtype == tf.int64
    assert chunk_spec["view_offset"].dtype == tf.int32
    # 30 views in chunks of 4: 8 chunks per video (the last half padding).
    sizes = [int(b[0].shape[0]) for b in ds]
    assert max(sizes) <= 3 and sum(sizes) == 8 * len(VIDEOS)
    # Without ids the chunk info stays last; the unchunked spec is (B, V, ...).
    no_ids = make(paths, 10, 3, views_per_chunk=4, with_ids=False)
    assert len(no_ids.element_spec) == 3 and "view_mask" in no_ids.element_spec[2]
    assert make(paths, 10, 3).element_spec[0].shape.as_list()[1] == 30


def reference_unique_count(num_frames, num_clips, clip_len=CLIP_LEN, step=2):
    """Unique frame indices of `num_clips` evenly spaced clips (numpy)."""
    span = (clip_len - 1) * step + 1
    part = max(num_frames - span + 1, 1) / num_clips
    starts = np.floor(part * (np.arange(num_clips) + 0.5)).astype(int)
    indices = starts[:, None] + np.arange(clip_len) * step
    return len(np.unique(np.minimum(indices, num_frames - 1)))


@pytest.mark.parametrize("num_clips,num_crops", [(10, 3), (25, 1)])
def test_each_unique_frame_decoded_once_per_video(paths, monkeypatch, num_clips,
                                                  num_crops):
    calls = []
    original = clips.decode_frames

    def counting(encoded, window=None, channels=3):
        # Records how many JPEGs each executed decode call gets.
        def record(n):
            calls.append(int(n))
            return n

        n = tf.py_function(record, [tf.shape(encoded)[0]], tf.int32)
        with tf.control_dependencies([n]):
            return original(tf.identity(encoded), window, channels)

    monkeypatch.setattr(clips, "decode_frames", counting)
    expected = [reference_unique_count(n, num_clips) for n, _ in VIDEOS]
    # Overlapping clips: far fewer decodes than views x frames.
    assert expected[1] < num_clips * CLIP_LEN
    for chunk in (None, 4):
        calls.clear()
        for _ in make(paths, num_clips, num_crops, chunk, num_parallel_calls=1):
            pass
        # One decode call per video (not per chunk), of its unique frames.
        assert calls == expected


def test_errors_name_the_argument(paths):
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="views_per_chunk"):
            make(paths, 10, 3, views_per_chunk=bad)
    with pytest.raises(ValueError, match=r"at most num_clips \* num_crops = 30"):
        make(paths, 10, 3, views_per_chunk=31)
    with pytest.raises(ValueError, match="flatten_views"):
        make(paths, 10, 3, views_per_chunk=5, flatten_views=True)


def tiny_model(num_classes=5):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((CLIP_LEN, CROP, CROP, 3))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


@pytest.mark.parametrize("num_clips,num_crops,views_per_chunk",
                         [(10, 3, 7), (25, 1, 10)])
def test_averaged_scores_equal_the_unchunked_ones(paths, num_clips, num_crops,
                                                  views_per_chunk):
    model = tiny_model()
    num_views = num_clips * num_crops
    expected, labels = [], []
    for clips, batch_labels, _ in make(paths, num_clips, num_crops):
        flat = tf.reshape(clips, (-1, CLIP_LEN, CROP, CROP, 3))
        logits = model(flat).numpy().reshape(clips.shape[0], num_views, -1)
        # Independent reference: numpy softmax averaged over each video's views.
        expected.append(aggregate.average_views(logits))
        labels.append(batch_labels.numpy())
    expected = np.concatenate(expected)
    accumulator = aggregate.ViewAccumulator(num_views)
    for clips, batch_labels, ids, chunks in make(paths, num_clips, num_crops,
                                                 views_per_chunk, batch_size=3):
        flat = tf.reshape(clips, (-1, CLIP_LEN, CROP, CROP, 3))
        probs = tf.nn.softmax(model(flat)).numpy().reshape(clips.shape[0],
                                                           views_per_chunk, -1)
        accumulator.add(chunks["video_index"], probs, chunks["view_mask"],
                        batch_labels.numpy(), ids.numpy())
    scores, got_labels, got_ids = accumulator.result()
    assert scores.shape == expected.shape == (len(VIDEOS), 5)
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got_labels, np.concatenate(labels))
    assert got_ids == [f"v{i}".encode() for i in range(len(VIDEOS))]
    # Not trivially uniform: the videos' scores differ.
    assert np.ptp(scores[:, 0]) > 1e-4


def test_accumulator_by_hand_masks_padding_and_checks_counts():
    acc = aggregate.ViewAccumulator(num_views=3)
    nan = float("nan")
    # Video 0: views [1, 0], [0, 1] | [1, 1] (+ a NaN padding view); video 1:
    # [0, 2] x 2 | [0, 5].
    acc.add([0, 0, 1], [[[1, 0], [0, 1]], [[1, 1], [nan, nan]], [[0, 2], [0, 2]]],
            [[True, True], [True, False], [True, True]], labels=[4, 4, 7],
            ids=["a", "a", "b"])
    acc.add([1], [[[0, 5], [9, 9]]], [[True, False]], labels=[7], ids=["b"])
    scores, labels, ids = acc.result()
    np.testing.assert_allclose(scores, [[2 / 3, 2 / 3], [0, 3]])
    np.testing.assert_array_equal(labels, [4, 7])
    assert ids == ["a", "b"]
    short = aggregate.ViewAccumulator(num_views=4)
    short.add([0], [[[1.0], [2.0]]], [[True, True]])
    with pytest.raises(ValueError, match="Every video needs 4 views"):
        short.result()
    with pytest.raises(ValueError, match="disagree on its label"):
        acc.add([1], [[[0, 0]]], [[True]], labels=[3])
    with pytest.raises(ValueError, match="disagree on its id"):
        acc.add([2, 2], [[[0, 0]], [[0, 0]]], [[True], [True]], ids=["c", "d"])
    np.testing.assert_allclose(acc.result()[0], scores)  # nothing was added
    with pytest.raises(ValueError, match=r"scores.shape=\(2, 2\)"):
        acc.add([0], [[1, 2], [3, 4]], [[True, True]])


def test_flow_chunks_reassemble_bitwise(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / records.shard_name("validation", 0, 1))

    def gray(image):
        return tf.io.encode_jpeg(image[..., None], quality=90).numpy()

    with tf.io.TFRecordWriter(path) as writer:
        for i, num_frames in enumerate((5, 12)):
            noise = rng.integers(0, 256, size=(3, num_frames, H, W), dtype=np.uint8)
            writer.write(records.write(
                video_id=f"f{i}", frames=[tf.io.encode_jpeg(f).numpy() for f in
                                          np.stack([noise[0]] * 3, axis=-1)],
                labels=[i], fps=12.0, height=H, width=W,
                flow_x=[gray(f) for f in noise[1]], flow_y=[gray(f) for f in noise[2]],
                flow_bound=20.0,
            ))
    clips, _, _ = unchunked(make([path], 2, 3, modality="flow", standardize="none"))
    assert clips.shape == (2, 6, 1, CROP, CROP, 2 * CLIP_LEN)
    got = reassemble(make([path], 2, 3, 4, modality="flow", standardize="none"), 6)
    for n, (views, label, _) in enumerate(got):
        assert label == n
        np.testing.assert_array_equal(views, clips[n])
