"""Scores files, SSv2 submission files and the evaluate command."""

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from klassterfork.cli import evaluate as evaluate_cli
from klassterfork.evaluation import metrics
from klassterfork.evaluation.predictions import (
    read_class_names,
    read_predictions,
    write_predictions,
)
from klassterfork.evaluation.submission import read_submission, write_submission

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SSV2 = SHARED_DATA / "annotations" / "ssv2"

NAMES = ["walk", "run", "jump", "sit"]


def make_scores(seed, n=12, c=4):
    rng = np.random.default_rng(seed)
    return rng.random((n, c)).astype(np.float32)


def test_round_trip_single_labels(tmp_path):
    scores = make_scores(0)
    ids = [f"v{i}" for i in range(12)]
    labels = np.arange(12) % 4
    npz, js = write_predictions(tmp_path / "preds.npz", ids, scores, labels,
                                NAMES)
    assert (npz.name, js.name) == ("preds.npz", "preds.json")
    for path in (tmp_path / "preds", npz, js):
        got = read_predictions(path)
        assert got["ids"] == ids
        np.testing.assert_array_equal(got["scores"], scores)
        np.testing.assert_array_equal(got["labels"][:, 0], labels)
        assert got["class_names"] == NAMES and got["labelled"]
    doc = json.loads(js.read_text())
    assert doc["num_videos"] == 12 and doc["class_names"] == NAMES
    v3 = doc["videos"][3]
    assert v3["id"] == "v3" and v3["labels"] == [3]
    best = np.argsort(-scores[3], kind="stable")[:4]
    assert [c for c, _ in v3["top5"]] == best.tolist()  # C = 4 < 5
    assert v3["top5"][0][1] == pytest.approx(float(scores[3, best[0]]))
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "preds.json", "preds.npz"]


def test_round_trip_multi_label_and_unlabelled(tmp_path):
    scores = make_scores(1, n=3)
    write_predictions(tmp_path / "m", [1, b"2", np.bytes_(b"3")], scores,
                      [[0, 2], [1], []], NAMES)
    got = read_predictions(tmp_path / "m.json")
    assert got["ids"] == ["1", "2", "3"]
    np.testing.assert_array_equal(got["labels"], [[0, 2], [1, -1], [-1, -1]])
    assert not got["labelled"]
    write_predictions(tmp_path / "t", ["a", "b", "c"], scores, None, NAMES)
    got = read_predictions(tmp_path / "t")
    assert got["labels"].shape == (3, 0) and not got["labelled"]


def test_write_rejects_mismatched_shapes_and_labels(tmp_path):
    with pytest.raises(ValueError, match="scores.shape=\\(12, 4\\), 11 ids"):
        write_predictions(tmp_path / "x", range(11), make_scores(0),
                          None, NAMES)
    with pytest.raises(ValueError, match="labels must be < 4"):
        write_predictions(tmp_path / "x", range(12), make_scores(0),
                          np.full(12, 4), NAMES)
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        read_predictions(tmp_path / "nothere.json")


def test_submission_round_trips_to_argsort(tmp_path):
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(30, 174)).astype(float)  # many ties
    ids = [str(100000 + i) for i in range(30)]
    path = write_submission(tmp_path / "submission.csv", ids, scores)
    got_ids, got = read_submission(path)
    assert got_ids == ids
    np.testing.assert_array_equal(
        got, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    first = path.read_text().splitlines()[0].split(";")
    assert len(first) == 6 and first[0] == "100000"
    # independent check: every listed class beats or ties (lower index)
    # every unlisted one
    for row, top in zip(scores, got):
        rest = [c for c in range(174) if c not in top]
        worst = top[-1]
        assert all(row[c] < row[worst] or (row[c] == row[worst] and c > worst)
                   for c in rest)


def test_submission_rejects_bad_ids_and_lines(tmp_path):
    with pytest.raises(ValueError, match="no ';'"):
        write_submission(tmp_path / "s", ["a;b"], np.zeros((1, 5)))
    bad = tmp_path / "bad.csv"
    bad.write_text("1;2;3;4;5;6\n2;x;3;4;5;6\n")
    with pytest.raises(ValueError, match="bad.csv:2:"):
        read_submission(bad)


def test_class_names_txt_and_json_agree():
    if not SSV2.is_dir():
        pytest.skip(f"shared data not found at {SSV2}")
    txt = read_class_names(SSV2 / "label_map.txt")
    js = read_class_names(SSV2 / "something-something-v2-labels.json")
    assert len(txt) == 174 and txt == js


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_command_single_file(tmp_path, capsys):
    scores = make_scores(4, n=20)
    labels = np.arange(20) % 3  # class 3 has no sample
    write_predictions(tmp_path / "p", range(20), scores, labels, NAMES)
    out = tmp_path / "eval"
    assert evaluate_cli.main([str(tmp_path / "p.npz"), "--out", str(out),
                              "--normalize"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    want = metrics.summary(scores, labels)
    for key in ("top1", "top5", "mean_class_accuracy", "mAP", "avg_hit"):
        assert report["metrics"][key] == pytest.approx(want[key])
    image = matplotlib.image.imread(out / "confusion_matrix.png")
    assert image.shape[0] > 0 and image.shape[1] > 0
    rows = _read_csv(out / "per_class.csv")
    assert [r["class_name"] for r in rows] == NAMES
    assert rows[3]["support"] == "0" and rows[3]["recall"] == ""
    pred = np.argmax(scores, axis=1)
    assert int(rows[0]["correct"]) == int(np.sum((pred == 0) & (labels == 0)))
    assert "top1" in capsys.readouterr().out


def test_evaluate_command_two_stream_fusion(tmp_path):
    rgb, flow = make_scores(5, n=16), make_scores(6, n=16)
    labels = np.arange(16) % 4
    ids = [f"id{i}" for i in range(16)]
    write_predictions(tmp_path / "rgb", ids, rgb, labels, NAMES)
    perm = np.random.default_rng(0).permutation(16)  # other row order
    write_predictions(tmp_path / "flow", [ids[i] for i in perm], flow[perm],
                      labels[perm], NAMES)
    out = tmp_path / "fused"
    sub = tmp_path / "sub.csv"
    assert evaluate_cli.main([
        str(tmp_path / "rgb"), str(tmp_path / "flow"), "--weights", "1",
        "1.5", "--out", str(out), "--submission", str(sub)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    fused = (1.0 * rgb + 1.5 * flow) / 2.5
    assert report["streams"]["rgb"]["top1"] == pytest.approx(
        metrics.top_k_accuracy(rgb, labels))
    assert report["streams"]["flow"]["top1"] == pytest.approx(
        metrics.top_k_accuracy(flow, labels))
    assert report["metrics"]["top1"] == pytest.approx(
        metrics.top_k_accuracy(fused, labels))
    assert report["fusion"]["weights"] == [1.0, 1.5]
    got = read_predictions(out / "fusion_predictions")
    np.testing.assert_allclose(got["scores"], fused, rtol=1e-6)
    sub_ids, sub_top = read_submission(sub)
    assert sub_ids == ids
    np.testing.assert_array_equal(  # C = 4: k clipped to 4
        sub_top, np.argsort(-fused, axis=1, kind="stable"))


def test_evaluate_command_unlabelled_writes_submission_only(tmp_path):
    scores = np.random.default_rng(7).random((5, 6))
    write_predictions(tmp_path / "test", range(5), scores, None,
                      [f"c{i}" for i in range(6)])
    sub = tmp_path / "sub.csv"
    assert evaluate_cli.main([str(tmp_path / "test"), "--out",
                              str(tmp_path / "o"), "--submission",
                              str(sub)]) == 0
    assert not (tmp_path / "o" / "metrics.json").exists()
    np.testing.assert_array_equal(read_submission(sub)[1],
                                  np.argsort(-scores, axis=1)[:, :5])


def test_evaluate_command_reports_mismatched_ids(tmp_path, capsys):
    write_predictions(tmp_path / "a", ["x", "y"], np.eye(2), [0, 1],
                      ["p", "q"])
    write_predictions(tmp_path / "b", ["x", "z"], np.eye(2), [0, 1],
                      ["p", "q"])
    assert evaluate_cli.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "same videos" in capsys.readouterr().err


def test_evaluate_command_contrastive_groups_on_ssv2(tmp_path):
    if not SSV2.is_dir():
        pytest.skip(f"shared data not found at {SSV2}")
    from klassterfork.analysis.contrastive import (
        contrastive_group_score,
        parse_groups,
    )
    names = read_class_names(SSV2 / "label_map.txt")
    rng = np.random.default_rng(8)
    scores = rng.random((300, 174))
    labels = rng.integers(0, 174, size=300)
    write_predictions(tmp_path / "ssv2", range(300), scores, labels,
                      ["c"] * 174)  # stored names replaced by --class-names
    groups_file = SSV2 / "contrastive_groups_list.txt"
    assert evaluate_cli.main([
        str(tmp_path / "ssv2"), "--class-names", str(SSV2 / "label_map.txt"),
        "--groups", str(groups_file)]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    want = contrastive_group_score(scores.astype(np.float32), labels,
                                   parse_groups(groups_file, names))
    got = report["contrastive_groups"]
    assert got["num_groups"] == 69
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["majority_baseline"] == pytest.approx(
        want["majority_baseline"])
    rows = _read_csv(tmp_path / "per_class.csv")
    assert rows[57]["class_name"] == "Poking something so that it falls over"
