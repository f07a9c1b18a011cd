"""`kf-train CONFIG --smoke` (issue 22): a few real steps on the real records,
nothing written outside a temporary folder."""

import json
import os
import tempfile

from klassterfork.cli.train import main
from tests.training.tiny_data import tiny_config, write_split


def test_smoke_trains_on_the_real_records_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    write_split(str(data), "train", 24, seed=0)
    write_split(str(data), "validation", 12, seed=1)
    exp = tmp_path / "exp"
    config = tmp_path / "c.hjson"
    config.write_text(tiny_config(data, exp, epochs=5))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = sorted(os.listdir(data))
    assert main([str(config), "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "smoke OK: 1 stage(s) trained 3 steps each on the real records" in out
    assert "step=3" in out  # one epoch of 3 steps, then the evaluation
    assert not exp.exists()  # the config's experiment folder untouched
    # The temporary folder removed (autograph leaves its own files there).
    assert [n for n in os.listdir(scratch) if n.startswith("kf_smoke_")] == []
    assert sorted(os.listdir(data)) == before


def test_smoke_without_the_records_is_a_located_error(tmp_path, capsys):
    config = tmp_path / "c.hjson"
    cfg = json.loads(tiny_config(tmp_path / "nowhere", tmp_path / "exp"))
    config.write_text(json.dumps(cfg))
    assert main([str(config), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert "datasets.train" in err and "kf-convert" in err and "Traceback" not in err
