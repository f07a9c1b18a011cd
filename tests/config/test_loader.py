import pytest

from klassterfork.config.loader import ConfigError, deep_merge, load_text

STAGES = """
# two stages: the second only changes the learning rate and epochs
[
  {
    datasets: {train: {dir: "${env:KF_TEST_DATA:-/data/default}", batch_size: 8}}
    model: {R2Plus1D: {num_classes: 5, dropout: 0.5}}
    optimizer: {Adam: {learning_rate: 0.001}}
    train_loop: {epochs: 3}
  }
  {
    optimizer: {Adam: {learning_rate: 0.0001}}
    train_loop: {epochs: 2}
  }
]
"""


def test_later_stage_inherits_what_it_leaves_out(monkeypatch):
    monkeypatch.delenv("KF_TEST_DATA", raising=False)
    stages, _ = load_text(STAGES, "s.hjson")
    assert len(stages) == 2
    assert stages[1]["model"] == {"R2Plus1D": {"num_classes": 5, "dropout": 0.5}}
    assert stages[1]["optimizer"]["Adam"]["learning_rate"] == 0.0001
    assert stages[1]["train_loop"]["epochs"] == 2
    assert stages[0]["datasets"]["train"]["dir"] == "/data/default"


def test_env_substitution_and_typed_overrides(monkeypatch):
    monkeypatch.setenv("KF_TEST_DATA", "/mnt/records")
    stages, _ = load_text(
        STAGES, "s.hjson",
        overrides=["train_loop.epochs=7", "model.R2Plus1D.dropout=0.25", "meta.name=abc"],
    )
    for stage in stages:
        assert stage["datasets"]["train"]["dir"] == "/mnt/records"
        assert stage["train_loop"]["epochs"] == 7 and isinstance(stage["train_loop"]["epochs"], int)
        assert stage["model"]["R2Plus1D"]["dropout"] == 0.25
        assert stage["meta"]["name"] == "abc"


def test_missing_env_without_default_is_located():
    text = '{\n  datasets: {train: {dir: "${env:KF_SURELY_UNSET_VAR}"}}\n}\n'
    with pytest.raises(ConfigError, match=r"^c.hjson:2: datasets.train.dir: .*KF_SURELY_UNSET_VAR"):
        load_text(text, "c.hjson")


def test_bad_hjson_reports_line_and_column():
    text = "{\n  model: {R2Plus1D: {num_classes: 5}\n  train_loop: [1, 2\n}\n"
    with pytest.raises(ConfigError) as err:
        load_text(text, "bad.hjson")
    assert str(err.value).startswith("bad.hjson:")
    line = int(str(err.value).split(":")[1])
    assert 2 <= line <= 5


def test_unknown_stage_key_names_line_and_close_match():
    text = "{\n  model: {R2Plus1D: {}}\n\n  optimiser: {Adam: {}}\n}\n"
    with pytest.raises(ConfigError) as err:
        load_text(text, "k.hjson")
    msg = str(err.value)
    assert msg.startswith("k.hjson:4: optimiser:")
    assert "optimizer" in msg


def test_component_change_replaces_instead_of_merging():
    base = {"optimizer": {"Adam": {"learning_rate": 1.0}}, "x": {"a": 1}}
    new = deep_merge(base, {"optimizer": {"SGD": {"momentum": 0.9}}, "x": {"b": 2}})
    assert new["optimizer"] == {"SGD": {"momentum": 0.9}}
    assert new["x"] == {"a": 1, "b": 2}
