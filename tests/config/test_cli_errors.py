"""kf-train on a malformed config: exit 2, one paragraph naming file, line, key."""

import pytest

from klassterfork.cli.train import main

GOOD = """{
  datasets: {
    train: {dir: "/nowhere", split: "train", clip_len: 8, crop_size: 32, batch_size: 2}
  }
  model: {
    R2Plus1D: {
      num_classes: 3
      dropout: 0.1
    }
  }
  optimizer: {Adam: {learning_rate: 0.001}}
}
"""


@pytest.mark.parametrize("old, new, line, expected", [
    ("R2Plus1D: {", "R2PlusOneD: {", 6, ["unknown model 'R2PlusOneD'", "R2Plus1D"]),
    ("dropout: 0.1", "dropot: 0.1", 8, ["model.R2Plus1D.dropot", "not an argument",
                                         "dropout"]),
    ("learning_rate: 0.001", "learning_rat: 0.001", 11, ["learning_rat", "learning_rate"]),
    ("clip_len: 8", "clip_lenght: 8", 3, ["datasets.train.clip_lenght", "clip_len"]),
])
def test_unknown_names_report_file_line_key_and_close_match(tmp_path, capsys, old, new,
                                                            line, expected):
    path = tmp_path / "bad.hjson"
    path.write_text(GOOD.replace(old, new))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kf-train: config error: {path}:{line}: ")
    assert len(err.strip().splitlines()) == 1, err  # one paragraph, no traceback
    for text in expected:
        assert text in err


def test_bad_hjson_reports_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.hjson"
    path.write_text(GOOD.replace("  optimizer: {Adam: {learning_rate: 0.001}}\n", "  optimizer: [\n"))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "invalid hjson" in err and "Traceback" not in err


def test_missing_config_and_bare_name_lookup(tmp_path, capsys):
    assert main(["no_such_config.hjson"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["demo_r2plus1d_synthetic.hjson", "--print-config"]) == 0
    assert '"R2Plus1D"' in capsys.readouterr().out
