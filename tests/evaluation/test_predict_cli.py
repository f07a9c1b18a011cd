"""kf-predict: the eval transform on raw videos, the CLI on a trained tiny model,
and every real video of `../shared/data/videos`."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli import predict
from klassterfork.evaluation import inference
from klassterfork.data import pipeline, records
from klassterfork.data.conversion.synthetic import write_video
from tests.training.tiny_data import ALL_LABELS as LABELS
from tests.training.tiny_data import motion_video, tiny_config, write_split

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def trained_tiny_model(tmp_path_factory):
    """A 4-class (left/right/up/down) R(2+1)D trained on tiny motion records.

    Built once per pytest session (under the session's base temp folder), so
    the Grad-CAM tests reuse it. Returns the experiment folder.
    """
    from klassterfork.cli.train import main as train

    root = tmp_path_factory.getbasetemp() / "kf_tiny_trained"
    exp = root / "exp"
    if (exp / "stage0" / "model.keras").exists():
        return exp
    data = root / "data"
    # Four directions, not two: in a binary model one class's evidence is the
    # other's negated, and Grad-CAM's ReLU would blank it.
    write_split(str(data), "train", 64, seed=0, classes=(0, 1, 2, 3))
    write_split(str(data), "validation", 16, seed=1, classes=(0, 1, 2, 3))
    config = json.loads(tiny_config(data, exp, epochs=20, checkpoint_every_steps=1000,
                                     deterministic=True))
    config["model"]["R2Plus1D"]["dropout"] = 0.0
    config["optimizer"]["Adam"]["learning_rate"] = 3e-3
    config["datasets"]["train"]["batch_size"] = 8  # 100 % train/val top-1 here
    path = root / "tiny.hjson"
    path.write_text(json.dumps(config))
    assert train([str(path)]) == 0
    return exp


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return trained_tiny_model(tmp_path_factory)


def test_views_pick_even_clips_by_hand():
    # Frame i is filled with value i, so every view pixel is its frame index.
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 6, 8, 3), np.uint8)
    views = inference.video_views(frames, clip_len=4, crop_size=4, num_clips=2,
                                frame_step=2)
    # span 7, room 10 - 7 + 1 = 4, 2 parts of 2: starts floor(1), floor(3).
    assert views.shape == (2, 4, 4, 4, 3)
    np.testing.assert_array_equal(views[:, :, 0, 0, 0], [[1, 3, 5, 7], [3, 5, 7, 9]])
    # A 3-frame video repeats its last frame.
    short = inference.video_views(frames[:3], clip_len=4, crop_size=4, num_clips=1)
    np.testing.assert_array_equal(short[0, :, 0, 0, 0], [0, 1, 2, 2])


@pytest.mark.parametrize("num_crops,standardize", [(1, "per_frame"), (3, "mean_std")])
def test_views_equal_the_record_eval_pipeline(tmp_path, num_crops, standardize):
    # The same frames through records + eval_dataset and through video_views.
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(13, 36, 50, 3), dtype=np.uint8)
    encoded = [tf.io.encode_jpeg(f, quality=90).numpy() for f in raw]
    decoded = np.stack([tf.io.decode_jpeg(e).numpy() for e in encoded])
    path = tmp_path / "v-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(records.write(video_id="v", frames=encoded, labels=[0], label_text="a",
                              fps=12.0, height=36, width=50))
    norm = {"standardize": standardize}
    if standardize == "mean_std":
        norm.update(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    view = dict(clip_len=4, crop_size=24, num_clips=3, num_crops=num_crops,
                frame_step=2, resize_short_side=30)
    ds = pipeline.eval_dataset([str(path)], batch_size=1, **view, **norm)
    expected = next(iter(ds))[0].numpy()[0]
    ours = inference.video_views(decoded, **view)
    got = inference.model_input(ours, {"mode": standardize, "mean": norm.get("mean"),
                                     "std": norm.get("std")}).numpy()
    assert got.shape == expected.shape == (3 * num_crops, 4, 24, 24, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_eval_transform_reads_config_and_manifest(tmp_path):
    (tmp_path / "validation.manifest.json").write_text(json.dumps({
        "label_names": ["a", "b"], "settings": {"short_side": 96, "fps": 12,
                                                 "max_frames": None}}))
    stage = {"datasets": {"val": {"dir": str(tmp_path), "split": "validation",
                                  "clip_len": 8, "crop_size": 64, "num_clips": 2,
                                  "batch_size": 16, "standardize": "unit"}}}
    t = inference.eval_transform(stage)
    assert t["view"] == {"clip_len": 8, "crop_size": 64, "num_clips": 2, "num_crops": 1,
                         "frame_step": 1, "resize_short_side": None,
                         "short_video": "repeat"}
    assert t["norm"] == {"mode": "unit", "mean": None, "std": None}
    assert t["decode"] == {"short_side": 96, "fps": 12, "max_frames": None}
    assert t["label_names"] == ["a", "b"]
    with pytest.raises(inference.PredictError, match="datasets.val"):
        inference.eval_transform({"datasets": {"train": {}}})
    odd = {"datasets": {"val": {"clip_len": 8, "crop_size": 64, "num_segments": 8}}}
    with pytest.raises(inference.PredictError, match="datasets.val.num_segments"):
        inference.eval_transform(odd)


def test_find_config_beside_stage_folder(tmp_path):
    (tmp_path / "stage1").mkdir()
    (tmp_path / "config.resolved.json").write_text("[]")
    path, index = inference.find_config(tmp_path / "stage1" / "best.keras")
    assert (Path(path), index) == (tmp_path / "config.resolved.json", 1)
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert inference.find_config(tmp_path / "a" / "b" / "m.keras") == (None, -1)


def write_motion_video(path, label, seed):
    frames = motion_video(label, np.random.default_rng(seed))
    write_video(str(path), frames, fps=12)
    return str(path)


def test_predicts_true_class_of_synthetic_videos(experiment, tmp_path, capsys):
    model = str(experiment / "stage0" / "model.keras")
    videos = [write_motion_video(tmp_path / f"v{i}.mp4", i % 4, seed=100 + i)
              for i in range(4)]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{i},{n}\n" for i, n in enumerate(LABELS)))
    assert predict.main([*videos, "--model", model, "--labels", str(labels),
                         "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for i, result in enumerate(doc["videos"]):
        assert result["ok"] and result["num_views"] == 2 and result["num_frames"] == 8
        top = result["top_k"]
        assert [t["index"] for t in top][0] == i % 4, result
        assert top[0]["label"] == LABELS[i % 4]
        assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-6)
    # Text output: the file, then "prob -> label" lines, highest first.
    assert predict.main([videos[1], "--model", model, "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == videos[1] and lines[1].endswith("-> moving right to left")
    assert len(lines) == 2 and 0.5 < float(lines[1].split()[0]) <= 1.0


def test_probabilities_match_a_manual_forward_pass(experiment, tmp_path):
    import keras

    model_path = experiment / "stage0" / "model.keras"
    video = write_motion_video(tmp_path / "v.mp4", 0, seed=7)
    model, transform, names = inference.load_setup(str(model_path))
    assert names == LABELS  # from the manifest when --labels is not given
    video_result = inference.run_video(video, model, transform, batch_size=1)
    probs, inputs = video_result.probs, inference.model_input(video_result.views,
                                                             transform["norm"])
    # Reference: reload, per-view logits, softmax by hand, mean of the views.
    reference = keras.saving.load_model(str(model_path), compile=False)
    logits = np.asarray(reference(np.asarray(inputs), training=False), np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, (e / e.sum(axis=1, keepdims=True)).mean(0),
                               rtol=1e-5)


def test_errors_name_the_file_and_continue(experiment, tmp_path, capsys):
    model = str(experiment / "stage0" / "model.keras")
    good = write_motion_video(tmp_path / "good.mp4", 1, seed=3)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    missing = str(tmp_path / "missing.mp4")
    assert predict.main([str(bad), good, missing, "--model", model, "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [v["ok"] for v in doc["videos"]] == [False, True, False]
    assert f"kf-predict: {bad}:" in captured.err
    assert f"kf-predict: {missing}: file not found" in captured.err
    # Setup errors stop everything with status 2.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    os.link(model, lonely / "m.keras")
    assert predict.main([good, "--model", str(lonely / "m.keras")]) == 2
    assert "config.resolved.json" in capsys.readouterr().err
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    assert predict.main([good, "--model", model, "--labels", str(three)]) == 2
    assert "3 class names for a model with 4 outputs" in capsys.readouterr().err


def test_every_real_video_decodes_to_a_probability_vector(experiment, capsys):
    folder = SHARED_DATA / "videos"
    if not folder.is_dir():
        pytest.skip(f"shared test data not found at {folder}")
    videos = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    model = str(experiment / "stage0" / "model.keras")
    status = predict.main([*videos, "--model", model, "--short-side", "48", "--json"])
    captured = capsys.readouterr()
    results = {Path(v["video"]).relative_to(folder).as_posix(): v
               for v in json.loads(captured.out)["videos"]}
    assert len(results) == 15
    failed = sorted(name for name, v in results.items() if not v["ok"])
    assert failed == ["decord/corrupted.mp4"]  # breaks mid-stream (data manifest)
    assert status == 1
    assert "corrupted.mp4: decoding failed after 28 frames" in captured.err
    for name, v in results.items():
        if v["ok"]:
            probs = [t["probability"] for t in v["top_k"]]
            assert sum(probs) == pytest.approx(1.0, abs=1e-6), name
            assert all(0.0 <= p <= 1.0 for p in probs) and v["num_views"] == 2
