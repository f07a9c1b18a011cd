"""klassterfork.evaluation.inference: the library behind kf-predict/kf-gradcam.

A fixed-weights model (numpy seed) on a stored clip, scored (a) against the
probabilities the code gave before it moved out of `cli/predict.py` (pinned
in testdata, with the script that made them) and (b) against the record
pipeline: the decoded frames written as records and read by
`pipeline.eval_dataset`, an independent path to the same views.
"""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline, records
from klassterfork.data.conversion.video import decode_video
from klassterfork.evaluation import inference

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
sys.path.insert(0, TESTDATA)
import make_inference_reference as reference  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return reference.tiny_model()


def test_predict_video_gives_the_pre_move_scores(model):
    pinned = np.load(reference.REFERENCE)["probs"]
    got = inference.predict_video(reference.VIDEO, model, reference.transform(),
                                  batch_size=4)
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, pinned, rtol=1e-5, atol=1e-7)
    assert np.ptp(pinned) > 0.1  # far from uniform: a wrong view would show
    # The batch size changes the forward passes, not the scores.
    for batch_size in (1, None):
        again = inference.predict_video(reference.VIDEO, model, reference.transform(),
                                        batch_size=batch_size)
        np.testing.assert_allclose(again, pinned, rtol=1e-5, atol=1e-7)


def test_predict_video_equals_the_record_eval_pipeline(model, tmp_path):
    transform = reference.transform()
    frames = decode_video(reference.VIDEO, **transform["decode"]).frames
    encoded = [tf.io.encode_jpeg(f, quality=100).numpy() for f in frames]
    path = tmp_path / "v-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(records.write(video_id="v", frames=encoded, labels=[0], label_text="a",
                              fps=8.0, height=frames[0].shape[0],
                              width=frames[0].shape[1]))
    view = transform["view"]
    ds = pipeline.eval_dataset([str(path)], batch_size=1, standardize="per_frame",
                               **view)
    clips = next(iter(ds))[0].numpy()[0]
    assert clips.shape == (6, 4, 32, 32, 3)
    logits = np.asarray(model(clips, training=False), np.float64)
    assert np.ptp(logits, axis=0).min() > 2  # views differ: the averaging matters
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    mean_logits = logits.mean(axis=0)
    wrong = np.exp(mean_logits - mean_logits.max())
    wrong /= wrong.sum()  # softmax of the averaged logits: a different rule
    got = inference.predict_video(reference.VIDEO, model, transform)
    # quality-100 JPEG moves pixels by a level or so, which this deliberately
    # sensitive model turns into a few percent; the other rule is ~30 % away.
    assert np.abs(got - expected).max() < 0.06
    assert np.abs(got - wrong).max() > 0.2
    assert got.argmax() == expected.argmax()


def test_run_video_returns_views_and_frame_count(model):
    result = inference.run_video(reference.VIDEO, model, reference.transform())
    assert result.views.dtype == np.uint8 and result.views.shape == (6, 4, 32, 32, 3)
    assert result.num_frames == 17
    np.testing.assert_allclose(result.probs.sum(), 1.0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_views_per_batch_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match=f"positive int. Received: {bad!r}"):
        inference.views_per_batch({"views_per_chunk": None}, bad)
    assert inference.views_per_batch({"views_per_chunk": None}) == 8
    assert inference.views_per_batch({"views_per_chunk": 12}) == 12
    assert inference.views_per_batch({"views_per_chunk": 12}, 3) == 3
