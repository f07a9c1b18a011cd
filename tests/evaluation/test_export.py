"""kf-export: the SavedModel's uint8 endpoint equals standardize -> model -> softmax."""

import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli.export import main
from klassterfork.data import transforms
from tests.evaluation.test_predict_cli import experiment  # noqa: F401  (shared fixture)


@pytest.mark.parametrize("where", ["local", "ram"])
def test_saved_model_serves_uint8_clips(experiment, tmp_path, where):  # noqa: F811
    """`ram://` (TF's in-memory filesystem) stands in for gs://: the folder
    must be written through klassterfork.files, not os.replace."""
    import keras

    model_path = experiment / "stage0" / "model.keras"
    out = tmp_path / "served"
    if where == "ram":
        out = f"ram://kf-export-cli-{uuid.uuid4().hex[:8]}/served"
    assert main(["--model", str(model_path), "--output", str(out)]) == 0
    assert not os.path.exists("ram:")
    served = tf.saved_model.load(str(out))
    clips = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    got = served.serve(tf.constant(clips)).numpy()
    model = keras.saving.load_model(str(model_path))
    logits = model(transforms.standardize(tf.constant(clips), "per_frame")).numpy()
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_missing_config_is_a_clear_error(tmp_path, capsys):
    args = ["--model", str(tmp_path / "m.keras"), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    assert "config.resolved.json" in capsys.readouterr().err
