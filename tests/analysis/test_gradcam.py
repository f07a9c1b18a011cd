"""Grad-CAM: the formula against numpy references, the layouts of the model
families, the pictures, and (issue 7) that a trained model's map covers the
moving object more than the background."""

import keras
import numpy as np
import pytest
from PIL import Image

from klassterfork import models
from klassterfork.analysis import gradcam
from klassterfork.cli import gradcam as gradcam_cli
from klassterfork.evaluation import inference as predict
from tests.evaluation.test_predict_cli import trained_tiny_model, write_motion_video
from tests.training.tiny_data import ALL_LABELS as LABELS
from tests.training.tiny_data import motion_video


def tiny_cam_model(seed=0, hidden=None):
    """Conv3D -> ReLU ("last_conv") -> GAP ("pool") -> [Dense ReLU] -> Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 8, 8, 3))
    x = keras.layers.Conv3D(5, 3, strides=(1, 2, 2), padding="same",
                            activation="relu", name="last_conv")(inputs)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def reference_cam(a, g):
    """Loop-by-loop Grad-CAM of one clip: a, g (T, H, W, C)."""
    weights = [g[..., c].mean() for c in range(a.shape[-1])]
    cam = np.zeros(a.shape[:-1])
    for c, w in enumerate(weights):
        cam += w * a[..., c]
    return np.where(cam > 0, cam, 0.0)


def test_linear_head_gives_the_class_activation_map():
    # With conv -> GAP -> Dense, dy/dA = W[:, k] / (T'H'W') everywhere: the
    # gradient (and so the whole map) is known without autodiff.
    model = tiny_cam_model()
    clip = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
    target, name = gradcam.find_target(model)
    assert name == "last_conv"
    a, g, logits, k = gradcam.activations_and_gradients(model, clip, 2, target=target)
    kernel = model.get_layer("logits").kernel.numpy()
    np.testing.assert_allclose(g[0], np.broadcast_to(kernel[:, 2] / 64, a[0].shape),
                               rtol=1e-5)
    raw = gradcam.cam_from_gradients(a, g)
    assert raw.shape == (4, 4, 4)
    cam_by_hand = np.maximum(a[0] @ kernel[:, 2] / 64, 0)
    np.testing.assert_allclose(raw, cam_by_hand, rtol=1e-5, atol=1e-7)
    assert k == 2 and logits.shape == (3,)


def test_nonlinear_head_matches_numpy_reference():
    model = tiny_cam_model(seed=3, hidden=7)
    clip = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype(np.float32)
    result = gradcam.grad_cam(model, clip)
    target, _ = gradcam.find_target(model)
    a, g, logits, k = gradcam.activations_and_gradients(
        model, clip, None, target=target)
    assert k == int(np.argmax(logits)) == result["class_index"]
    ref = reference_cam(a[0].astype(np.float64), g[0].astype(np.float64))
    assert ref.max() > 0  # a map that is not all zero
    np.testing.assert_allclose(result["raw"], ref, rtol=1e-4, atol=1e-6)
    # Upsampled: frame t shows slice floor(t * 4 / 4) resized; min-max in [0, 1].
    cam = result["cam"]
    assert cam.shape == (4, 8, 8) and cam.min() == 0.0 and cam.max() == pytest.approx(1)
    import cv2

    up = np.stack([cv2.resize(s.astype(np.float32), (8, 8)) for s in ref])
    np.testing.assert_allclose(cam, (up - up.min()) / (up.max() - up.min()), atol=1e-5)


def test_upsample_repeats_slices_in_time_and_normalizes():
    raw = np.stack([np.full((2, 2), v, np.float32) for v in (1.0, 3.0)])
    cam = gradcam.upsample_cam(raw, num_frames=5, height=4, width=6)
    # Frames 0, 1, 2 take slice 0 (t * 2 // 5 = 0, 0, 0, 1, 1).
    np.testing.assert_allclose(cam[:, 0, 0], [0, 0, 0, 1, 1])
    assert cam.shape == (5, 4, 6)
    assert not gradcam.upsample_cam(np.ones((1, 2, 2)), num_frames=2, height=2,
                                    width=2).any()


def test_segment_and_token_layouts_match_references():
    rng = np.random.default_rng(4)
    a, g = rng.normal(size=(3, 2, 2, 4)), rng.normal(size=(3, 2, 2, 4))
    seg = gradcam.cam_from_gradients(a, g, layout="segments")
    for s in range(3):  # each segment has its own weights
        np.testing.assert_allclose(seg[s], reference_cam(a[s], g[s]), atol=1e-6)
    tokens_a, tokens_g = rng.normal(size=(1, 12, 4)), rng.normal(size=(1, 12, 4))
    tok = gradcam.cam_from_gradients(tokens_a, tokens_g, layout="tokens",
                                     grid=(2, 2, 3))
    ref = reference_cam(tokens_a[0].reshape(2, 2, 3, 4),
                        tokens_g[0].reshape(2, 2, 3, 4))
    np.testing.assert_allclose(tok, ref, atol=1e-6)
    with pytest.raises(ValueError, match="grid"):
        gradcam.cam_from_gradients(tokens_a, tokens_g, layout="tokens", grid=(2, 2, 2))
    with pytest.raises(ValueError, match="layout"):
        gradcam.cam_from_gradients(a, g, layout="2d")


@pytest.mark.parametrize("name,kwargs,layer,raw_shape", [
    ("R2Plus1D", dict(blocks_per_stage=(1, 1), widths=(4, 8), stem_width=4,
                      input_shape=(4, 32, 32, 3)), "stage2_block1_out", (2, 8, 8)),
    ("VideoViT", dict(variant="S", depth=1, num_frames=4, image_size=32),
     "block0_add2", (2, 2, 2)),
    # TSN: one map per segment (the 4 segments are folded into the batch).
    ("TSN", dict(temporal="tsm", num_segments=4, input_shape=(4, 32, 32, 3)),
     "stage4_block3_out", (4, 1, 1)),
])
def test_model_families_find_their_target(name, kwargs, layer, raw_shape):
    model = models.build(name, num_classes=3, **kwargs)
    clip = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    result = gradcam.grad_cam(model, clip, class_index=1)
    assert result["layer"] == layer and result["raw"].shape == raw_shape
    assert result["cam"].shape == (4, 32, 32)
    assert np.isfinite(result["cam"]).all()


def test_overlay_and_pictures(tmp_path):
    frames = np.zeros((3, 6, 8, 3), np.uint8)
    cam = np.zeros((3, 6, 8), np.float32)
    cam[:, :, 4:] = 1.0
    out = gradcam.overlay(frames, cam, alpha=0.5)
    # JET: 0 -> dark blue (0, 0, 128), 1 -> dark red (128, 0, 0), halved.
    np.testing.assert_array_equal(out[0, 0, 0], [0, 0, 64])
    np.testing.assert_array_equal(out[0, 0, 7], [64, 0, 0])
    out[:, 0, 0, 1] = [0, 100, 200]  # PIL merges identical frames
    gradcam.write_gif(tmp_path / "a.gif", out, fps=5, scale=2)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (16, 12) and gif.info["loop"] == 0
    gradcam.write_strip(tmp_path / "a.png", frames, out, predictions=[("x", 0.7)],
                        true_label="x", title="clip")
    with Image.open(tmp_path / "a.png") as png:
        assert png.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.png"]


def solid_boxes(image, colour):
    """Bounding boxes (x0, y0, x1, y1), left to right, of the runs of columns
    holding pixels of exactly `colour`."""
    mask = (image[..., :3] == colour).all(-1)
    cols = np.where(mask.any(0))[0]
    runs = np.split(cols, np.where(np.diff(cols) > 1)[0] + 1)
    boxes = []
    for run in runs:
        rows = np.where(mask[:, run].any(1))[0]
        boxes.append((run[0], rows[0], run[-1] + 1, rows[-1] + 1))
    return boxes


@pytest.mark.parametrize("frame_shape,count", [((36, 48), 12), ((48, 48), 3)])
def test_strip_rows_keep_the_frame_aspect_without_dead_space(tmp_path, frame_shape,
                                                             count):
    # Frames pure red, overlays pure blue: each panel is a solid box to measure.
    h, w = frame_shape
    frames = np.zeros((count, h, w, 3), np.uint8)
    frames[..., 0] = 255
    overlays = np.zeros_like(frames)
    overlays[..., 2] = 255
    predictions = [("Rotating something anticlockwise", 0.6), ("b", 0.3), ("c", 0.1)]
    path = tmp_path / "s.png"
    gradcam.write_strip(path, frames, overlays, predictions=predictions,
                        true_label="Rotating something anticlockwise",
                        title="a_long_video_name.mp4  Grad-CAM of 'x' at stage4")
    image = np.asarray(Image.open(path).convert("RGB"))
    red, blue = solid_boxes(image, (255, 0, 0)), solid_boxes(image, (0, 0, 255))
    assert len(red) == len(blue) == min(count, 8)
    for top, bottom in zip(red, blue):
        tw, th = top[2] - top[0], top[3] - top[1]
        bw, bh = bottom[2] - bottom[0], bottom[3] - bottom[1]
        # Same size in both rows, and the frame's aspect (to a pixel).
        assert (tw, th) == (bw, bh)
        assert abs(th - tw * h / w) <= 1.5, (tw, th)
        assert top[0] == bottom[0] and 0 < bottom[1] - top[3] <= 10
    # No dead band: no run of more than 20 white rows anywhere (the old
    # layout left ~130 between the title and the panels), and the text
    # (the only non-panel ink above the panels) fits inside the picture.
    blank = (image > 245).all(axis=(1, 2))
    longest = run = 0
    for white in blank:
        run = run + 1 if white else 0
        longest = max(longest, run)
    assert longest <= 20, longest
    ink = np.where((image[: red[0][1]] < 200).any(axis=(0, 2)))[0]
    assert ink.min() > 0 and ink.max() < image.shape[1] - 1


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return trained_tiny_model(tmp_path_factory)


# Both tests below share a model trained for 20 s: slow (the default run
# keeps the Grad-CAM tests against the numpy reference above).
@pytest.mark.slow
def test_trained_model_looks_at_the_moving_object(experiment):
    # The "Done when": mean saliency inside the box > outside.
    model, transform, _ = predict.load_setup(str(experiment / "stage0" / "model.keras"))
    rng = np.random.default_rng(11)
    inside, outside = [], []
    for i in range(8):
        label = i % 4
        frames = motion_video(label, rng)
        views = predict.video_views(frames, **transform["view"])
        inputs = np.asarray(predict.model_input(views, transform["norm"]))
        # The box is drawn at 230 over noise below 60: its mask in the view.
        mask = views[0].max(axis=-1) > 145
        assert 0.05 < mask.mean() < 0.3
        cam = gradcam.grad_cam(model, inputs[0], class_index=label)["cam"]
        inside.append(cam[mask].mean())
        outside.append(cam[~mask].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).all(), (inside, outside)
    assert inside.mean() > 1.5 * outside.mean(), (inside, outside)


@pytest.mark.slow
def test_cli_writes_gif_and_png(experiment, tmp_path, capsys):
    video = write_motion_video(tmp_path / "clip.mp4", 1, seed=9)
    out = tmp_path / "cams"
    model = str(experiment / "stage0" / "model.keras")
    status = gradcam_cli.main([video, "--model", model, "--out", str(out),
                               "--true-label", LABELS[1]])
    assert status == 0
    text = capsys.readouterr().out
    assert f"Grad-CAM of class {LABELS[1]!r} at stage2_block1_out" in text
    with Image.open(out / "clip_gradcam.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (64, 64)
    assert (out / "clip_gradcam.png").stat().st_size > 0
    assert gradcam_cli.main([video, "--model", model, "--out", str(out),
                             "--true-label", "no such class"]) == 2
    assert "neither a class name nor an index" in capsys.readouterr().err
