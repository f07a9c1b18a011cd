"""Mixed precision trains on CPU (issue 5): float16 with dynamic loss scaling,
bfloat16 without; convolutions compute in the low precision, logits in float32."""

import csv
import json

import keras
import numpy as np
import pytest

from klassterfork.cli.train import main
from klassterfork.training.builders import train_loop_config
from klassterfork.config.loader import ConfigError, load_text
from tests.training.tiny_data import tiny_config, write_split


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp")
    write_split(str(d), "train", 16, seed=0)
    write_split(str(d), "validation", 4, seed=1)
    return d


@pytest.mark.parametrize("policy, compute", [("mixed_float16", "float16"),
                                             ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_trains(data_dir, tmp_path, policy, compute):
    path = tmp_path / "c.hjson"
    path.write_text(tiny_config(data_dir, tmp_path / "exp", epochs=2, mixed_precision=policy))
    assert main([str(path)]) == 0
    with open(tmp_path / "exp" / "stage0" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    model = keras.saving.load_model(str(tmp_path / "exp" / "stage0" / "model.keras"))
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv3D)]
    assert convs and all(l.compute_dtype == compute for l in convs)
    assert all(w.dtype == "float32" for w in model.trainable_weights)  # master weights
    assert model.output.dtype == "float32"  # the head computes in float32
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_unknown_policy_is_a_config_error():
    stages, source = load_text(json.dumps({"train_loop": {"mixed_precision": "fp8"}}), "p.hjson")
    with pytest.raises(ConfigError, match="mixed_precision"):
        train_loop_config(stages[0], source)
