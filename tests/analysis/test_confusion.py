"""Confusion matrix counts, PNG and CSV files, and the training-curve plot."""

import csv
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from klassterfork.analysis import confusion
from klassterfork.analysis.plot_training import plot_training, read_csv_log
from klassterfork.cli import plot_training as plot_cli
from klassterfork.evaluation import metrics

REPO = Path(__file__).resolve().parents[2]


def ref_confusion(labels, preds, num_classes):
    cm = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(labels, preds):
        cm[t][p] += 1
    return np.array(cm)


def test_confusion_counts_match_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=200)
    labels[labels == 5] = 4  # class 5: no sample
    preds = rng.integers(0, 7, size=200)
    cm = metrics.confusion_matrix(labels, preds, 7)
    np.testing.assert_array_equal(cm, ref_confusion(labels, preds, 7))
    assert cm.sum() == 200 and cm[5].sum() == 0
    norm = confusion.normalize_rows(cm)
    np.testing.assert_allclose(norm.sum(axis=1), [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(norm[0], cm[0] / cm[0].sum())


def test_confusion_multi_label_counts_each_label():
    cm = metrics.confusion_matrix(np.array([[0, 2], [1, -1]]), [2, 0], 3)
    np.testing.assert_array_equal(cm, [[0, 0, 1], [1, 0, 0], [0, 0, 1]])


def test_confusion_rejects_bad_predictions():
    with pytest.raises(ValueError, match="predictions"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)


@pytest.mark.parametrize("num_classes, normalize", [(5, False), (174, True)])
def test_confusion_png_is_written(tmp_path, num_classes, normalize):
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, size=400)
    cm = metrics.confusion_matrix(labels, rng.integers(0, num_classes, 400),
                                  num_classes)
    names = [f"class number {i}" for i in range(num_classes)]
    path = tmp_path / "confusion_matrix.png"
    confusion.plot_confusion_matrix(cm, names, path, normalize=normalize)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    if num_classes == 174:  # 0.12 in per class at 100 dpi: >= 12 px/class
        assert image.shape[0] >= 12 * num_classes
    assert [p.name for p in tmp_path.iterdir()] == ["confusion_matrix.png"]


def test_per_class_csv(tmp_path):
    scores = np.eye(3)[[0, 0, 1, 1]]  # predictions 0, 0, 1, 1
    labels = np.array([0, 1, 1, 1])  # class 2: no sample, never predicted
    report = metrics.per_class_precision_recall(scores, labels)
    path = tmp_path / "per_class.csv"
    confusion.write_per_class_csv(path, ["a", "b", "c"], report)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"class_index": "0", "class_name": "a", "support": "1",
                       "predicted": "2", "correct": "1", "precision": "0.5",
                       "recall": "1.0"}
    assert float(rows[1]["recall"]) == pytest.approx(2 / 3)
    assert rows[2]["precision"] == "" and rows[2]["recall"] == ""


# ------------------------------------------------------------ training plot


def write_log(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_plot_training_full_log(tmp_path):
    log = tmp_path / "log.csv"
    header = ["epoch", "loss", "top1", "top5", "lr", "val_loss", "val_top1",
              "val_top5"]
    rows = [[e, 2.0 / (e + 1), 0.1 * e, 0.2 * e, 0.1 * 0.5 ** e,
             2.2 / (e + 1), 0.09 * e, ""] for e in range(5)]
    write_log(log, header, rows)
    cols = read_csv_log(log)
    np.testing.assert_allclose(cols["loss"], [2.0 / (e + 1) for e in range(5)])
    assert np.isnan(cols["val_top5"]).all()
    panels = plot_training(log, tmp_path / "curves.png")
    assert panels == {"loss": ["loss", "val_loss"],
                      "accuracy": ["top1", "val_top1", "top5", "val_top5"],
                      "learning rate": ["lr"]}
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[0] > 0


def test_plot_training_tolerates_missing_columns(tmp_path, capsys):
    log = tmp_path / "keras.csv"  # Keras CSVLogger names, no LR, no val
    write_log(log, ["epoch", "accuracy", "loss"], [[0, 0.1, 3.0],
                                                   [1, 0.3, 2.0]])
    assert plot_cli.main([str(log)]) == 0
    assert (tmp_path / "keras_curves.png").is_file()
    out = capsys.readouterr().out
    assert "accuracy: accuracy" in out and "learning rate: (no column)" in out
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert plot_cli.main([str(empty)]) == 2
    assert "empty CSV log" in capsys.readouterr().err


def test_tools_shims_run(tmp_path):
    log = tmp_path / "log.csv"
    write_log(log, ["epoch", "loss"], [[0, 1.0], [1, 0.5]])
    for tool, args in [("plot_training.py", [str(log)]),
                       ("evaluate.py", ["--help"])]:
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / tool), *args],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
