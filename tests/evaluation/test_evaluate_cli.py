"""`kf-evaluate` helpers: stream names and the fusion step, by hand."""

import numpy as np
import pytest

from klassterfork.cli import evaluate as evaluate_cli


def test_stream_names_defaults_and_errors():
    assert evaluate_cli.stream_names(["a/x.npz", "b/y.npz"], None) == ["rgb", "flow"]
    assert evaluate_cli.stream_names(["a/x.npz"], None) == ["x"]
    assert evaluate_cli.stream_names(["a", "b"], ["s", "t"]) == ["s", "t"]
    with pytest.raises(SystemExit, match="one or two scores files. Received: 3"):
        evaluate_cli.stream_names(["a", "b", "c"], None)
    with pytest.raises(SystemExit, match=r"Received: \['s'\]"):
        evaluate_cli.stream_names(["a", "b"], ["s"])
    # A repeated name would have silently dropped one of the two streams.
    with pytest.raises(SystemExit,
                       match=r"distinct name per file. Received: \['s', 's'\]"):
        evaluate_cli.stream_names(["a", "b"], ["s", "s"])


def test_fuse_single_stream_is_its_scores(tmp_path):
    scores = np.array([[0.2, 0.8]], np.float32)
    streams = {"x": {"scores": scores, "ids": ["v"], "labels": np.array([[1]])}}
    weights, final = evaluate_cli.fuse(streams, weights=None, softmax=False,
                                       out=tmp_path, class_names=["a", "b"])
    assert weights is None and final is scores
    assert not list(tmp_path.iterdir())


def test_fuse_rejects_three_weights(tmp_path):
    s = {"scores": np.zeros((1, 2), np.float32), "ids": ["v"],
         "labels": np.array([[0]])}
    with pytest.raises(SystemExit,
                       match=r"one weight per file. Received: \[1.0, 1.0, 1.0\]"):
        evaluate_cli.fuse({"a": s, "b": s}, weights=[1.0, 1.0, 1.0], softmax=False,
                          out=tmp_path, class_names=["a", "b"])
