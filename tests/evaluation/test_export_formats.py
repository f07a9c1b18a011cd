"""kf-export --format onnx|litert: each file equals the SavedModel's `serve`.

Reference: the SavedModel `serve` endpoint, itself checked against
standardize -> Keras model -> numpy softmax. Tiny random models get a head
scaled so the probabilities are far from uniform (a uniform output would
hide a wrong standardization). onnxruntime and LiteRT have their own
kernels, so a wrong layout, a dropped standardization or a wrong variable
read changes the probabilities far beyond 1e-4. A family a format cannot
express must raise the one-paragraph error naming the op.
"""

import json
import os
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.data import transforms  # noqa: E402
from klassterfork.evaluation import export  # noqa: E402

ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tf2onnx")

TOL = 1e-4
NORM = {
    "mode": "mean_std",
    "mean": list(transforms.KINETICS_MEAN),
    "std": list(transforms.KINETICS_STD),
}
R2PLUS1D = dict(
    blocks_per_stage=(1, 1, 1, 1),
    widths=(8, 8, 8, 8),
    stem_width=8,
    input_shape=(2, 32, 32, 3),
)
TSN = dict(num_segments=2, depth=26, input_shape=(2, 32, 32, 3), dropout=0.0)
VIT = dict(variant="S", depth=1, num_frames=2, image_size=32, drop_path=0.0)
# The flow stream's 2L channels have no per-channel RGB mean/std.
FLOW_NORM = {"mode": "symmetric", "mean": None, "std": None}
SLOW = (pytest.mark.slow,)
BOTH_SLOW = {"onnx": SLOW, "litert": SLOW}
NOT_A_CLASSIFIER = {"onnx": "single-input", "litert": "single-input"}
EMBEDDING = {"onnx": "embedding head", "litert": "embedding head"}
# (id, builder name, kwargs, {format: the op the error must name},
#  {format: marks}): every family and variant the model registry builds
# (R2Plus1D18 / R3D18 / MC3_18 are R2Plus1D's three blocks at full size,
# Model3D1_224 has its own temporal pool). The default run keeps R(2+1)D,
# one 2D family and the VideoViT ONNX error (also checked through the CLI
# below); the rest are slow.
FAMILIES = [
    ("R2Plus1D", "R2Plus1D", R2PLUS1D, {}, {}),
    ("R3D", "R2Plus1D", dict(R2PLUS1D, block="3d"), {}, BOTH_SLOW),
    ("MC3", "R2Plus1D", dict(R2PLUS1D, block="mc3"), {}, BOTH_SLOW),
    (
        "R2Plus1D-embedding",
        "R2Plus1D",
        dict(R2PLUS1D, head={"EmbeddingHead": {"units": 8}}),
        EMBEDDING,
        BOTH_SLOW,
    ),
    (
        "TwoStream2D-rgb",
        "TwoStream2D",
        dict(stream="rgb", backbone="vgg16", image_size=32, dropout=0.0),
        {},
        {"onnx": SLOW},
    ),
    (
        "TwoStream2D-flow",
        "TwoStream2D",
        dict(stream="flow", backbone="vgg16", image_size=32, num_flow_frames=2,
             dropout=0.0),
        {},
        BOTH_SLOW,
    ),
    (
        "TwoStream2D-rgb-inception_v3",
        "TwoStream2D",
        dict(stream="rgb", backbone="inception_v3", image_size=75, dropout=0.0),
        {},
        BOTH_SLOW,
    ),
    (
        "TwoStream2D-both",
        "TwoStream2D",
        dict(backbone="vgg16", image_size=32, num_flow_frames=2, dropout=0.0),
        NOT_A_CLASSIFIER,
        BOTH_SLOW,
    ),
    ("VideoViT", "VideoViT", VIT, {"onnx": "Erfc"}, {"litert": SLOW}),
    (
        "VideoViT-frozen_block",
        "VideoViT",
        dict(VIT, frozen_block=True, frozen_width=32, frozen_heads=2,
             frozen_hidden=64),
        {"onnx": "Erfc"},
        BOTH_SLOW,
    ),
    (
        "Model3D1",
        "Model3D1",
        dict(input_shape=(4, 32, 32, 3), spatial_dropout=0.0),
        {},
        BOTH_SLOW,
    ),
    (
        "Model3D1_224",
        "Model3D1_224",
        dict(input_shape=(4, 32, 32, 3), spatial_dropout=0.0),
        {},
        BOTH_SLOW,
    ),
    ("TSN-none", "TSN", dict(TSN, temporal="none"), {}, BOTH_SLOW),
    ("TSN-tsm", "TSN", dict(TSN, temporal="tsm"), {}, BOTH_SLOW),
    (
        "TSN-tdn",
        "TSN",
        dict(TSN, temporal="tdn", input_shape=(10, 64, 64, 3)),
        {},
        BOTH_SLOW,
    ),
    (
        "TSN-msn",
        "TSN",
        dict(TSN, temporal="msn"),
        {"onnx": "BitwiseAnd", "litert": "BitwiseAnd"},
        BOTH_SLOW,
    ),
]


def norm_for(model):
    """The clips' standardization: Kinetics mean/std for RGB, symmetric for flow."""
    return NORM if model.inputs[0].shape[-1] == 3 else FLOW_NORM


def spread_head(model, x):
    """Scales the logits Dense so the logits have std 3 on `x`."""
    heads = [layer for layer in model.layers if layer.name.endswith("logits")]
    if not heads:  # an embedding head: nothing to spread, export refuses it
        return
    head = heads[-1]
    norm = norm_for(model)
    logits = model(transforms.standardize(x, **_kw(norm)), training=False).numpy()
    factor = 3.0 / max(float(logits.std()), 1e-12)
    head.set_weights([w * factor for w in head.get_weights()])


def _kw(norm):
    return {"mode": norm["mode"], "mean": norm["mean"], "std": norm["std"]}


def run_onnx(path, clips):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["video"]
    return session.run(["probabilities"], {"video": clips})[0]


def run_litert(path, clips):
    return invoke_litert(litert.Interpreter(model_path=str(path)), clips)


def invoke_litert(interpreter, clips):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, clips.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, clips)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


RUNNERS = {"onnx": run_onnx, "litert": run_litert}


def clips_for(model, seed=0):
    if len(model.inputs) != 1:  # TwoStream2D "both": export refuses it
        return None
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).integers(0, 256, (3, *shape), dtype=np.uint8)


def served(saved_model_dir, clips):
    loaded = tf.saved_model.load(str(saved_model_dir))  # kept alive while it runs
    return loaded.serve(tf.constant(clips)).numpy()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Builds (once per family) the model, its clips and, when `reference`,
    the SavedModel's output (a family export refuses has none)."""
    cache = {}

    def get(case_id, name, kwargs, reference=True):
        if case_id not in cache:
            keras_model = models.build(name, num_classes=7, **kwargs)
            clips = clips_for(keras_model)
            if clips is not None:
                spread_head(keras_model, clips)
            folder = tmp_path_factory.mktemp(case_id)
            cache[case_id] = [keras_model, clips, folder, None]
        keras_model, clips, folder, want = cache[case_id]
        if reference and want is None:
            norm = norm_for(keras_model)
            export.export(keras_model, folder / "saved", norm=norm)
            cache[case_id][3] = want = served(folder / "saved", clips)
        return keras_model, clips, folder, want

    return get


def family_params():
    for case_id, name, kwargs, fails, marks in FAMILIES:
        for fmt in ("onnx", "litert"):
            yield pytest.param(
                case_id,
                name,
                kwargs,
                fmt,
                fails.get(fmt),
                marks=marks.get(fmt, ()),
                id=f"{case_id}-{fmt}",
            )


@pytest.mark.parametrize("case_id,name,kwargs,fmt,failing_op", list(family_params()))
def test_format_equals_saved_model(family, case_id, name, kwargs, fmt, failing_op):
    keras_model, clips, folder, want = family(
        case_id, name, kwargs, reference=not failing_op
    )
    path = folder / f"model{export.SUFFIXES[fmt]}"
    norm = NORM if clips is None else norm_for(keras_model)
    if failing_op:
        with pytest.raises(export.ExportError, match=failing_op) as err:
            export.export(keras_model, path, norm=norm, format=fmt)
        assert "\n" not in str(err.value) and not path.exists()
        return
    export.export(keras_model, path, norm=norm, format=fmt)
    got = RUNNERS[fmt](path, clips)
    assert want.max() - want.min() > 0.2  # far from uniform: the check can fail
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert not [p for p in os.listdir(folder) if ".tmp" in p]  # atomic: no leftovers


def test_saved_model_equals_keras_reference(family):
    keras_model, clips, _, want = family("R2Plus1D", "R2Plus1D", R2PLUS1D)
    logits = keras_model(transforms.standardize(clips, **_kw(NORM))).numpy()
    z = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(want, z / z.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def read_back(path, fmt, clips):
    """Runs an export at a `ram://` path; onnxruntime and LiteRT read bytes."""
    if fmt == "saved_model":
        return served(path, clips)
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if fmt == "onnx":
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"video": clips})[0]
    return invoke_litert(litert.Interpreter(model_content=data), clips)


@pytest.mark.parametrize(
    "fmt",
    [
        "onnx",
        pytest.param("saved_model", marks=SLOW),
        pytest.param("litert", marks=SLOW),
    ],
)
def test_exports_through_the_files_layer_to_a_ram_path(family, fmt):
    """TF's in-memory filesystem stands in for gs://: a writer using plain
    open()/os.replace would create a local folder named "ram:" instead."""
    from klassterfork.evaluation.onnx_runner import OnnxClassifier

    keras_model, clips, _, want = family("R2Plus1D", "R2Plus1D", R2PLUS1D)
    folder = f"ram://kf-export-{uuid.uuid4().hex[:8]}"
    path = f"{folder}/out/model{export.SUFFIXES[fmt]}"
    for _ in range(2):  # the second export replaces the first
        export.export(keras_model, path, norm=NORM, format=fmt)
    np.testing.assert_allclose(read_back(path, fmt, clips), want, atol=TOL, rtol=0)
    written = [n for _, _, names in tf.io.gfile.walk(folder) for n in names]
    assert written and not [n for n in written if ".tmp" in n]  # renamed, none left
    assert not os.path.exists("ram:")
    if fmt == "onnx":  # kf-predict's runner reads the remote file too
        got = np.exp(OnnxClassifier(path, providers=["CPUExecutionProvider"])(clips))
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "pool,strides",
    [((3, 1, 1), (2, 1, 1)), ((2, 3, 2), (1, 2, 2)), ((3, 3, 3), (3, 3, 3))],
)
def test_sliced_pool_equals_average_pooling_3d(pool, strides):
    """LiteRT's stand-in for AveragePooling3D (no TFLite builtin) is exact."""
    import keras

    x = np.random.default_rng(0).normal(size=(2, 7, 9, 8, 4)).astype(np.float32)
    want = keras.layers.AveragePooling3D(pool, strides=strides)(x).numpy()
    got = export._sliced_pool_class()(pool, strides)(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def write_run(tmp_path, name, kwargs, clip_len, crop_size):
    """A run folder: exp/stage0/model.keras and exp/config.resolved.json."""
    keras_model = models.build(name, num_classes=4, **kwargs)
    spread_head(keras_model, clips_for(keras_model))
    (tmp_path / "exp" / "stage0").mkdir(parents=True)
    model_path = tmp_path / "exp" / "stage0" / "model.keras"
    keras_model.save(model_path)
    val = {
        "clip_len": clip_len,
        "crop_size": crop_size,
        "standardize": "mean_std",
        "mean": NORM["mean"],
        "std": NORM["std"],
    }
    (tmp_path / "exp" / "config.resolved.json").write_text(
        json.dumps({"datasets": {"val": val}})
    )
    return keras_model, model_path


def test_cli_exports_and_kf_predict_runs_the_onnx(tmp_path, capsys):
    from klassterfork.cli.export import main as kf_export
    from klassterfork.cli.predict import main as kf_predict
    from klassterfork.data.conversion.synthetic import write_video

    keras_model, model_path = write_run(tmp_path, "R2Plus1D", R2PLUS1D, 2, 32)
    onnx_path = model_path.with_suffix(".onnx")
    assert (
        kf_export(
            ["--model", str(model_path), "--output", str(onnx_path), "--format", "onnx"]
        )
        == 0
    )
    clips = clips_for(keras_model, seed=1)
    logits = keras_model(transforms.standardize(clips, **_kw(NORM))).numpy()
    z = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(
        run_onnx(onnx_path, clips), z / z.sum(-1, keepdims=True), atol=TOL, rtol=0
    )
    frames = np.random.default_rng(2).integers(0, 256, (6, 40, 48, 3), dtype=np.uint8)
    video = tmp_path / "v.mp4"
    write_video(str(video), frames, fps=6)
    results = []
    for path in (model_path, onnx_path):  # the .keras run is the reference
        capsys.readouterr()
        assert (
            kf_predict([str(video), "--model", str(path), "--json", "--top-k", "4"])
            == 0
        )
        top = json.loads(capsys.readouterr().out)["videos"][0]["top_k"]
        results.append({t["index"]: t["probability"] for t in top})
    assert max(results[0].values()) - min(results[0].values()) > 0.05
    for index, prob in results[0].items():
        assert results[1][index] == pytest.approx(prob, abs=TOL)


def test_cli_names_the_op_it_cannot_convert(tmp_path, capsys):
    from klassterfork.cli.export import main as kf_export

    kwargs = dict(variant="S", depth=1, num_frames=2, image_size=32, drop_path=0.0)
    _, model_path = write_run(tmp_path, "VideoViT", kwargs, 2, 32)
    out = tmp_path / "vit.onnx"
    capsys.readouterr()
    assert (
        kf_export(
            ["--model", str(model_path), "--output", str(out), "--format", "onnx"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Erfc" in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()
