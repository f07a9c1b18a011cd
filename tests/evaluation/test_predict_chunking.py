"""kf-predict with `datasets.val.views_per_chunk`: the views go through the
model (and standardization) in chunks, with the same probabilities."""

import json

import keras
import numpy as np
import pytest

from klassterfork.cli import predict
from klassterfork.evaluation import inference
from klassterfork.data.conversion.synthetic import write_video

VIEW = dict(clip_len=4, crop_size=16, num_clips=10, num_crops=3, frame_step=1)


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 16, 16, 3))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


class Recorder:
    """Wraps a model; records the batch size of every call."""

    def __init__(self, model):
        self.model, self.sizes = model, []

    def __call__(self, x, training=False):
        self.sizes.append(len(x))
        return self.model(x, training=training)


@pytest.mark.parametrize("standardize", ["per_frame", "per_clip"])
def test_chunked_standardization_and_forward_passes_equal_one_pass(standardize):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(21, 20, 26, 3), dtype=np.uint8)
    views = inference.video_views(frames, **VIEW)
    norm = {"mode": standardize, "mean": None, "std": None}
    model = Recorder(tiny_model())
    # Reference: all 30 standardized views in one pass, numpy softmax mean.
    logits = np.asarray(model.model(inference.model_input(views, norm)))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = (z / z.sum(axis=1, keepdims=True)).mean(axis=0)
    for batch_size, sizes in ((7, [7, 7, 7, 7, 2]), (30, [30]), (1, [1] * 30)):
        model.sizes.clear()
        got = inference.predict_views(model, views, batch_size=batch_size, norm=norm)
        assert model.sizes == sizes
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert np.ptp(expected) > 1e-4
    with pytest.raises(ValueError, match="batch_size"):
        inference.predict_views(model, views, batch_size=0, norm=norm)


def test_cli_takes_views_per_chunk_from_the_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "stage0").mkdir()
    model_path = tmp_path / "stage0" / "model.keras"
    tiny_model().save(model_path)
    block = {**VIEW, "batch_size": 2, "standardize": "unit", "views_per_chunk": 12}
    config = [{"datasets": {"val": block}}]
    (tmp_path / "config.resolved.json").write_text(json.dumps(config))
    video = str(tmp_path / "v.mp4")
    frames = np.random.default_rng(1).integers(0, 256, (12, 32, 48, 3), dtype=np.uint8)
    write_video(video, frames, fps=12)
    seen = []
    original = inference.predict_views

    def recording(model, inputs, *, batch_size=8, norm=None):
        seen.append((batch_size, inputs.dtype, norm["mode"]))
        return original(model, inputs, batch_size=batch_size, norm=norm)

    # kf-predict goes through the library, which looks the function up per call.
    monkeypatch.setattr(inference, "predict_views", recording)
    assert predict.main([video, "--model", str(model_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # uint8 views in, standardized per chunk of the config's 12 views.
    assert seen == [(12, np.uint8, "unit")]
    assert doc["videos"][0]["num_views"] == 30
    chunked = {t["index"]: t["probability"] for t in doc["videos"][0]["top_k"]}
    assert predict.main([video, "--model", str(model_path), "--json",
                         "--batch-size", "30"]) == 0
    whole = json.loads(capsys.readouterr().out)["videos"][0]["top_k"]
    assert seen[-1][0] == 30
    for t in whole:
        assert chunked[t["index"]] == pytest.approx(t["probability"], abs=1e-6)
    assert inference.eval_transform({"datasets": {"val": block}})["views_per_chunk"] == 12
