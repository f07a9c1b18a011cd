"""stage_eval.score_metrics against hand-worked rows."""

import math

import numpy as np

from klassterfork.training import stage_eval


def test_scores_hand_checked_ties_and_unlabelled_rows():
    scores = np.array([
        [0.1, 0.7, 0.2],   # label 1: top1 hit
        [0.4, 0.4, 0.2],   # label 1: tie with class 0, which ranks first -> miss
        [0.5, 0.3, 0.2],   # label 2: ranked last -> miss (top5 covers C=3)
        [0.9, 0.05, 0.05],  # unlabelled (-1): left out
    ])
    labels = np.array([1, 1, 2, -1])
    got = stage_eval.score_metrics(scores, labels, with_loss=True)
    assert got["top1"] == 1 / 3 and got["top5"] == 1.0
    expected_loss = -(math.log(0.7) + math.log(0.4) + math.log(0.2)) / 3
    assert abs(got["loss"] - expected_loss) < 1e-12
    assert "loss" not in stage_eval.score_metrics(scores, labels, with_loss=False)


def test_no_labelled_rows_is_nan_not_an_error():
    got = stage_eval.score_metrics(np.ones((2, 3)), np.array([-1, -1]), with_loss=True)
    assert all(math.isnan(v) for v in got.values())


def test_top5_with_more_classes():
    scores = np.tile(np.arange(8.0)[::-1], (2, 1))  # class 0 best ... class 7 worst
    got = stage_eval.score_metrics(scores, np.array([4, 5]), with_loss=False)
    assert got == {"top1": 0.0, "top5": 0.5}
