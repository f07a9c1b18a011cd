"""Wrong value types and ranges: exit 2 and one located paragraph (issue 11),
from the file (path:line) or from a `--set` override (named as such)."""

import pytest

from klassterfork.cli.train import main
from klassterfork.config.loader import ConfigError, load_text
from klassterfork.training.builders import check_stage
from tests.config.test_cli_errors import GOOD


@pytest.mark.parametrize("old, new, line, key, expected", [
    ("batch_size: 2", 'batch_size: "eight"', 3, "datasets.train.batch_size",
     "must be an integer >= 1. Received: 'eight' (str)"),
    ("batch_size: 2", "batch_size: -8", 3, "datasets.train.batch_size",
     "must be an integer >= 1. Received: -8 (int)"),
    ("batch_size: 2", "batch_size: true", 3, "datasets.train.batch_size",
     "Received: True (bool)"),
    ("clip_len: 8", "clip_len: 2.5", 3, "datasets.train.clip_len",
     "must be an integer >= 1. Received: 2.5 (float)"),
    ("clip_len: 8", "clip_len: 8, frame_step: [2, 0]", 3, "datasets.train.frame_step",
     "must be an integer or a list of numbers >= 1. Received: [2, 0] (list)"),
    ("optimizer: {Adam", "train_loop: {epochs: \"3\"}\n  optimizer: {Adam", 11,
     "train_loop.epochs", "must be an integer >= 1. Received: '3' (str)"),
    ("optimizer: {Adam", "train_loop: {deterministic: 1}\n  optimizer: {Adam", 11,
     "train_loop.deterministic", "must be true or false. Received: 1 (int)"),
])
def test_bad_values_report_file_line_key_and_accepted(tmp_path, capsys, old, new, line,
                                                      key, expected):
    path = tmp_path / "bad.hjson"
    assert GOOD.count(old) == 1
    path.write_text(GOOD.replace(old, new))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kf-train: config error: {path}:{line}: {key}: "), err
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err  # one paragraph, no traceback


def test_failing_set_override_says_it_came_from_set(tmp_path, capsys):
    path = tmp_path / "good.hjson"
    path.write_text(GOOD)
    assert main([str(path), "--set", "datasets.train.batch_size=-8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kf-train: config error: {path}: --set datasets.train.batch_size=-8: "
                          "datasets.train.batch_size: must be an integer >= 1"), err
    # A block set from the command line is located there too.
    assert main([str(path), "--set", "train_loop={epochs: 0}"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: --set train_loop={{epochs: 0}}: train_loop.epochs: must be" in err, err
    # The same key, bad in the file and not overridden: the file's line.
    path.write_text(GOOD.replace("batch_size: 2", "batch_size: 0"))
    assert main([str(path), "--set", "datasets.train.clip_len=4"]) == 2
    assert f"{path}:3: datasets.train.batch_size:" in capsys.readouterr().err


def test_accepted_values_pass():
    stages, source = load_text(GOOD.replace(
        "clip_len: 8", "clip_len: 8, frame_step: [1, 2], num_segments: null, shuffle_buffer: 0"
    ) + "\n", "good.hjson")
    stages[0]["train_loop"] = {"epochs": 3, "stop_after_steps": None, "deterministic": False}
    check_stage(stages[0], source)  # no error
    stages[0]["train_loop"]["stop_after_steps"] = 0
    with pytest.raises(ConfigError, match="train_loop.stop_after_steps: must be an integer >= 1"):
        check_stage(stages[0], source)
