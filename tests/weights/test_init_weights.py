"""init_weights.load_into: every format written by an independent writer.

Each source file is written by its own library (Keras `save` /
`save_weights`, Keras 2's h5 writer, `torch.save`, `tf.train.Checkpoint`)
from a model holding random weights and non-trivial BatchNorm statistics;
the loaded variables must equal the file's tensors and the outputs the
source model's (or PyTorch reference's) to 1e-4.
"""

import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import two_stream  # noqa: E402
from klassterfork.weights import init_weights  # noqa: E402
from klassterfork.weights.init_weights import InitWeightsError  # noqa: E402

TOL = 1e-4
SMALL = dict(block="3d", blocks_per_stage=(1, 1, 1, 1), widths=(8, 8, 16, 16),
             dropout=0.2,  # a Dropout: its RNG state is no weight
             input_shape=(4, 16, 16, 3))


def randomize(model, seed):
    """Random weights: kernels N(0, 1 / fan_in), BN gamma / var U(0.5, 1.5),
    other vectors N(0, 0.1). Returns the model."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape, name = tuple(var.shape), var.name.split("/")[-1]
        if name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = rng.normal(0, 0.1, shape)
        var.assign(value.astype(var.dtype))
    return model


def small_r3d(num_classes=7, seed=0):
    return randomize(models.build("R2Plus1D", num_classes=num_classes, **SMALL), seed)


def clip(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def run(model, x):
    """Inference output; eager (no `predict` trace: seconds per InceptionV3)."""
    return np.asarray(model(x, training=False))


def values(model):
    """{variable name: value} as `init_weights` names them."""
    return {t.name: np.asarray(t.variable)
            for t in init_weights.target_variables(model).values()}


# ---- Keras 3 files ---------------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    source = small_r3d()
    source.save(folder / "model.keras")
    source.save_weights(folder / "model.weights.h5")
    return source, folder


@pytest.mark.parametrize("name, fmt", [("model.keras", "keras"),
                                       ("model.weights.h5", "keras_weights_h5")])
def test_keras_files_load_every_tensor(keras_files, name, fmt):
    source, folder = keras_files
    model = small_r3d(seed=5)
    report = init_weights.load_into(model, folder / name, strict=True)
    assert report.format == fmt and report.unused == [] and report.initialized == []
    want = values(source)
    assert sorted(report.loaded) == sorted(want)
    for key, value in values(model).items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    x = clip((2, *SMALL["input_shape"]))
    np.testing.assert_allclose(run(model, x), run(source, x), atol=TOL, rtol=0)


def test_other_class_count_leaves_exactly_the_head(keras_files):
    source, folder = keras_files
    model = small_r3d(num_classes=5, seed=5)
    head = values(model)
    report = init_weights.load_into(model, folder / "model.keras")
    assert report.initialized == [
        {"name": "logits/kernel", "reason": "shape (16, 7) in the file, (16, 5) here"},
        {"name": "logits/bias", "reason": "shape (7,) in the file, (5,) here"}]
    assert report.unused == []
    got, want = values(model), values(source)
    np.testing.assert_array_equal(got["logits/kernel"], head["logits/kernel"])
    np.testing.assert_array_equal(got["stem_conv1/kernel"], want["stem_conv1/kernel"])
    paragraph = report.paragraph()
    assert "left initialized" in paragraph
    assert "logits/kernel (shape (16, 7)" in paragraph


def test_exclude_and_strict(keras_files):
    _, folder = keras_files
    model = small_r3d(num_classes=5, seed=5)
    before = values(model)
    with pytest.raises(InitWeightsError, match=r"model.keras \(keras\): strict"
                       r".*logits/kernel \(shape \(16, 7\)"):
        init_weights.load_into(model, folder / "model.keras", strict=True)
    for key, value in values(model).items():  # a refusal assigns nothing
        np.testing.assert_array_equal(value, before[key])
    report = init_weights.load_into(model, folder / "model.keras",
                                    exclude=["^stem_", "logits"], strict=True)
    reasons = {i["name"]: i["reason"] for i in report.initialized}
    assert reasons["stem_conv1/kernel"] == "excluded by init_weights.exclude[0]"
    assert reasons["logits/bias"] == "excluded by init_weights.exclude[1]"
    assert all(k.startswith(("stem_", "logits")) for k in reasons)
    np.testing.assert_array_equal(values(model)["stem_conv1/kernel"],
                                  before["stem_conv1/kernel"])
    assert report.to_json()["source"]["format"] == "keras"


# ---- TensorFlow checkpoint folder -----------------------------------------


def test_checkpoint_folder_loads_the_model_part(tmp_path):
    source = small_r3d()
    optimizer = keras.optimizers.Adam()
    optimizer.build(source.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=source, optimizer=optimizer,
                                     step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, tmp_path / "checkpoints", 2).save()
    model = small_r3d(seed=5)
    report = init_weights.load_into(model, tmp_path / "checkpoints", strict=True)
    assert report.format == "tf_checkpoint" and len(report.sha256) == 64
    want = values(source)
    for key, value in values(model).items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    x = clip((2, *SMALL["input_shape"]))
    np.testing.assert_allclose(run(model, x), run(source, x), atol=TOL, rtol=0)


# ---- errors ----------------------------------------------------------------


def test_errors_name_the_path(tmp_path):
    model = small_r3d()
    with pytest.raises(InitWeightsError, match="nope.keras: no such file"):
        init_weights.load_into(model, tmp_path / "nope.keras")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InitWeightsError, match=r"notes.txt: unknown weights "
                       r"format \(first bytes b'hello'\). Accepted: a .keras"):
        init_weights.load_into(model, tmp_path / "notes.txt")
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(InitWeightsError, match="cut.keras: a zip that cannot be read"):
        init_weights.load_into(model, tmp_path / "cut.keras")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitWeightsError, match="empty: a folder without a "
                       "TensorFlow checkpoint"):
        init_weights.load_into(model, tmp_path / "empty")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InitWeightsError, match=r"other.h5: an HDF5 file of no "
                       r"Keras layout.*\['x'\]"):
        init_weights.load_into(model, tmp_path / "other.h5")
    with zipfile.ZipFile(tmp_path / "bad.pth", "w") as f:
        f.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(InitWeightsError, match="bad.pth: (cannot be read as torch"
                       "|a PyTorch file; reading it needs torch)"):
        init_weights.load_into(model, tmp_path / "bad.pth")
    with pytest.raises(InitWeightsError, match=r"exclude\[1\] must be a regular"):
        init_weights.load_into(model, tmp_path / "other.h5", exclude=["a", "("])


def test_paragraph_shortens_long_lists():
    report = init_weights.InitReport(
        "w.pth", "ab" * 32, "torch", ["a/kernel"],
        [{"name": f"l{i}/kernel", "reason": "not in the file"} for i in range(20)],
        [])
    text = report.paragraph()
    assert text.startswith("init_weights: w.pth (torch, sha256 abababababab): 1 "
                           "variables loaded, 20 left initialized, 0 file")
    assert "l11/kernel (not in the file), ... and 8 more." in text
    assert "l12/kernel" not in text


# ---- PyTorch files ---------------------------------------------------------

torch_reference = None
try:
    import torch  # noqa: E402

    from references import torch_reference  # noqa: E402
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def torch_logits(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@needs_torch
@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module_prefix", "legacy"])
def test_torch_video_resnet_matches_torch(tmp_path, wrap):
    small = dict(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
    ref = torch_reference.randomize(
        torch_reference.VideoResNet("r3d", num_classes=7, **small), seed=2)
    state = ref.state_dict()
    obj = {"bare": state, "legacy": state, "state_dict": {"state_dict": state},
           "module_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(obj, tmp_path / "w.pth.tar",
               _use_new_zipfile_serialization=wrap != "legacy")
    model = small_r3d(seed=5)
    report = init_weights.load_into(model, tmp_path / "w.pth.tar", strict=True)
    assert report.format == "torch" and report.initialized == []
    np.testing.assert_array_equal(  # (out, in, t, h, w) -> (t, h, w, in, out)
        values(model)["stage2_block1_conv1/kernel"],
        state["layer2.0.conv1.0.weight"].numpy().transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(values(model)["stem_bn1/moving_variance"],
                                  state["stem.1.running_var"].numpy())
    x = clip((2, *SMALL["input_shape"]), seed=3)
    want = torch_logits(ref, x.transpose(0, 4, 1, 2, 3))
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(run(model, x), want, atol=TOL, rtol=0)


@needs_torch
def test_torch_tsm_resnet50_matches_torch(tmp_path):
    segments = 2
    ref = torch_reference.randomize(torch_reference.ResNet50TSN(
        num_classes=5, num_segments=segments, tsm=True, layers=(2, 2, 2, 2)), seed=4)
    torch.save({"model": ref.state_dict()}, tmp_path / "tsm.pth")
    model = models.build("TSN", num_classes=5, temporal="tsm", depth=26,
                         num_segments=segments, input_shape=(segments, 32, 32, 3))
    report = init_weights.load_into(model, tmp_path / "tsm.pth", strict=True)
    assert report.unused == [] and report.notes == []  # v1.5 in both
    x = clip((2, segments, 32, 32, 3), seed=5)
    want = torch_logits(ref, x.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2))
    np.testing.assert_allclose(run(model, x), want, atol=TOL, rtol=0)


@needs_torch
def test_torch_v15_file_into_stride_in_1x1_model_is_named(tmp_path):
    """torchvision's v1.5 weights in a ResNet v1 TSN load (same variables)
    but compute another function from stage 2 on: the report says so."""
    ref = torch_reference.randomize(torch_reference.ResNet50TSN(
        num_classes=5, num_segments=1, layers=(2, 2, 2, 2)), seed=4)
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    model = models.build("TSN", num_classes=5, depth=26, num_segments=1,
                         input_shape=(1, 32, 32, 3), stride_in_1x1=True)
    report = init_weights.load_into(model, tmp_path / "r50.pth", strict=True)
    assert report.unused == [] and report.initialized == []
    assert "this model is ResNet v1 (stride_in_1x1: true" in report.paragraph()
    assert "stages 2-4 compute a different function" in report.notes[0]


@needs_torch
def test_torch_videomae_finetuned_and_encoder_only(tmp_path):
    ref = torch_reference.randomize(torch_reference.VideoMAEViT(
        num_classes=6, depth=2, num_tokens=2 * 2 * 2), seed=6)
    state = ref.state_dict()
    torch.save({"module": state}, tmp_path / "ft.pth")
    model = models.build("VideoViT", variant="S", depth=2, num_frames=4,
                         image_size=32, num_classes=6)
    report = init_weights.load_into(model, tmp_path / "ft.pth", strict=True)
    assert report.initialized == [] and report.unused == []
    x = clip((2, 4, 32, 32, 3), seed=7)
    want = torch_logits(ref, x.transpose(0, 4, 1, 2, 3))
    np.testing.assert_allclose(run(model, x), want, atol=TOL, rtol=0)
    encoder = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("head.")}
    torch.save(encoder, tmp_path / "mae.pth")
    fresh = models.build("VideoViT", variant="S", depth=2, num_frames=4,
                         image_size=32, num_classes=3)
    report = init_weights.load_into(fresh, tmp_path / "mae.pth")
    assert report.initialized == [
        {"name": "logits/kernel", "reason": "not in the file (no `head.weight`)"},
        {"name": "logits/bias", "reason": "not in the file (no `head.weight`)"}]
    np.testing.assert_array_equal(values(fresh)["block1_fc2/kernel"],
                                  state["blocks.1.mlp.fc2.weight"].numpy().T)


# ---- keras.applications no-top files ---------------------------------------


def write_legacy_h5(app_model, path):
    """The Keras 2 layout keras.applications ships (`layer_names`,
    `weight_names`), written by Keras' own legacy writer."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app_model)


def test_applications_resnet50_into_tsn(tmp_path):
    size = 32
    app = randomize(keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(size, size, 3)), seed=8)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_legacy_h5(app, path)
    tsn = models.build("TSN", num_classes=None, num_segments=1,
                       input_shape=(1, size, size, 3))
    report = init_weights.load_into(tsn, path, strict=True)
    assert report.format == "keras_legacy_h5" and "ResNet v1" in report.notes[0]
    # v1 weights in the v1.5 default: named, with the key that matches them
    # (test_applications_resnet50.py loads them with it, end to end).
    assert "model.TSN.stride_in_1x1: true" in report.paragraph()
    src = {w.path: np.asarray(w) for w in app.weights}
    bias = app.get_layer("conv1_conv").bias.numpy()
    np.testing.assert_allclose(tsn.get_layer("bn1").moving_mean.numpy(),
                               app.get_layer("conv1_bn").moving_mean.numpy() - bias)
    np.testing.assert_array_equal(
        tsn.get_layer("stage3_block1_downsample_conv").kernel.numpy(),
        app.get_layer("conv4_block1_0_conv").kernel.numpy())
    assert len(src) == len(report.loaded) + 53  # 53 conv biases folded
    x = clip((2, size, size, 3), seed=9)
    # The stem and stage 1 are the same function in both nets.
    ours = keras.Model(tsn.input, tsn.get_layer("stage1_block2_out").output)
    theirs = keras.Model(app.input, app.get_layer("conv2_block2_out").output)
    want = run(theirs, x)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(run(ours, x[:, None]), want,
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("backbone, size", [("vgg16", 32), ("inception_v3", 75)])
def test_applications_into_two_stream(tmp_path, backbone, size):
    app_fn = two_stream.BACKBONES[backbone][0]
    app = randomize(app_fn(include_top=False, weights=None, pooling="avg",
                           input_shape=(size, size, 3)), seed=10)
    path = tmp_path / f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_legacy_h5(app, path)
    model = models.build("TwoStream2D", num_classes=3, backbone=backbone,
                         image_size=size, num_flow_frames=1, imagenet_weights=str(path))
    x = clip((2, size, size, 3), seed=11)
    want = run(app, x)
    assert np.abs(want).max() > 0.1
    got = run(model.get_layer("rgb_backbone"), x)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    if backbone != "vgg16":
        return  # (the by-name path below is the same for InceptionV3)
    fresh = models.build("TwoStream2D", num_classes=3, backbone=backbone,
                         image_size=size, num_flow_frames=1)
    report = init_weights.load_into(fresh, path)  # both backbones, by name
    first = next(layer.name for layer in fresh.get_layer("flow_backbone").layers
                 if layer.weights)  # its kernel has 2L = 2 input channels
    assert report.unused == [] and {i["name"] for i in report.initialized} == {
        f"flow_backbone/{first}/kernel", "rgb_logits/kernel", "rgb_logits/bias",
        "flow_logits/kernel", "flow_logits/bias"}
