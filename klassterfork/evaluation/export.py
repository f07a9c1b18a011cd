"""Exports a classifier that takes uint8 clips: SavedModel, ONNX or LiteRT.

Every format holds the same function, `serve`: uint8 (B, T, H, W, 3) at the
model's input size -> the run's standardization (`transforms.standardize`,
inside the graph) -> the model -> float32 softmax probabilities
(B, num_classes). A client then needs no copy of our preprocessing.

- "saved_model": a folder; `tf.saved_model.load(path).serve(video)`.
- "onnx": one `.onnx` file converted by tf2onnx from the `tf.function`
  (its Keras-3 `from_keras` path is broken); input "video", output
  "probabilities"; run with onnxruntime.
- "litert": one `.tflite` file from `tf.lite.TFLiteConverter` on the
  concrete function, TFLite builtin ops only (a Flex/Select-TF op would
  need a delegate most LiteRT runtimes lack); run with
  `ai_edge_litert.interpreter.Interpreter`. The batch axis is dynamic:
  resize the input tensor before `allocate_tensors`.

Every output goes through the one filesystem layer (`klassterfork.files`),
so a `gs://` or `ram://` destination works like a local one. Each file is
written to a temporary name beside the target, then renamed. A local
SavedModel folder is written beside the target and renamed onto it; a
remote one is written locally, then copied file by file with
`saved_model.pb` last (object stores rename a folder object by object, and
TF's `ram://` renames only the folder's own entry), so a reader that finds
`saved_model.pb` finds the variables it names.
A model whose graph holds an op the format cannot express raises
`ExportError` naming the op; so does a model that is not a clip classifier
(several inputs or outputs, or an embedding head: its unit vectors are not
class logits, and `serve` would return a softmax of them).

tf2onnx and ai-edge-litert are the `export` extra; they are imported only by
the format that needs them.
"""

import logging
import os
import re
import shutil
import tempfile

from klassterfork import files

FORMATS = ("saved_model", "onnx", "litert")
SUFFIXES = {"saved_model": "", "onnx": ".onnx", "litert": ".tflite"}
ONNX_OPSET = 17
INPUT_NAME = "video"
OUTPUT_NAME = "probabilities"


class ExportError(ValueError):
    """A model the chosen format cannot express; the message names the op."""


def serving_function(model, norm):
    """The `tf.function` every format holds: uint8 clips -> probabilities.

    Args:
        model: keras.Model taking standardized (B, T, H, W, 3) float clips,
            returning (B, num_classes) logits.
        norm: dict. `transforms.standardize` keywords: mode, mean, std.

    Returns:
        (tf.function with one input signature, the input `tf.TensorSpec`).

    Raises:
        ExportError: the model does not have one (B, T, H, W, C) input and
            one output, or ends in an embedding head.
    """
    import keras
    import tensorflow as tf

    from klassterfork.data import transforms

    if len(model.inputs) != 1 or isinstance(model.output, (dict, list, tuple)):
        raise ExportError(
            "export needs a single-input, single-output classifier. Received: "
            f"model {model.name!r} with {len(model.inputs)} input(s) and outputs "
            f"{getattr(model, 'output_names', '?')}"
        )
    if isinstance(model.layers[-1], keras.layers.UnitNormalization):
        raise ExportError(
            "export needs a classifier ending in class logits; `serve` returns "
            f"their softmax. Received: model {model.name!r} ending in an embedding "
            f"head ({model.layers[-1].name!r}, unit vectors for zero-shot "
            "similarity); save it with model.save() instead."
        )
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(video):
        x = transforms.standardize(
            video, norm["mode"], mean=norm.get("mean"), std=norm.get("std")
        )
        logits = tf.cast(model(x, training=False), tf.float32)
        return tf.nn.softmax(logits, axis=-1, name=OUTPUT_NAME)

    return serve, spec


def export(model, path, *, norm, format="saved_model"):
    """Writes `serve` (uint8 clips -> probabilities) in one format.

    Args:
        model: keras.Model, as in `serving_function`.
        path: str. The SavedModel folder, or the `.onnx` / `.tflite` file
            (replaced atomically).
        norm: dict. `transforms.standardize` keywords: mode, mean, std.
        format: str. One of `FORMATS`. Defaults to "saved_model".

    Returns:
        str, `path`.

    Raises:
        ValueError: unknown `format`.
        ExportError: the format cannot express an op of the model.
    """
    writers = {
        "saved_model": write_saved_model,
        "onnx": write_onnx,
        "litert": write_litert,
    }
    if format not in writers:
        raise ValueError(
            f"`format` must be one of {list(FORMATS)}. Received: format={format!r}"
        )
    writers[format](model, str(path), norm=norm)
    return str(path)


def write_saved_model(model, path, *, norm):
    """A SavedModel folder whose `serve(video uint8) -> probabilities`."""
    import keras

    serve, spec = serving_function(model, norm)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve.python_function, input_signature=[spec])
    path = path.rstrip("/")
    if files.is_remote(path):
        with tempfile.TemporaryDirectory(prefix="kf-export-") as local:
            archive.write_out(local, verbose=False)
            _upload_saved_model(local, path)
        return
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(tmp, verbose=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _upload_saved_model(local, path):
    """Copies a local SavedModel folder onto a remote `path`, `saved_model.pb`
    last; an old `saved_model.pb` there is removed first, so no reader pairs
    it with the new variables."""
    import tensorflow as tf

    pb = "saved_model.pb"
    old = f"{path}/{pb}"
    if files.exists(old):
        tf.io.gfile.remove(old)
    names = []
    for folder, _, file_names in os.walk(local):
        rel = os.path.relpath(folder, local)
        names += [os.path.normpath(os.path.join(rel, n)) for n in file_names]
    for name in sorted(names, key=lambda n: (n == pb, n)):
        with files.atomic_path(f"{path}/{name}") as tmp:
            shutil.copyfile(os.path.join(local, name), tmp)


def write_onnx(model, path, *, norm, opset=ONNX_OPSET):
    """An ONNX file (tf2onnx from the `tf.function`); input "video"."""
    import onnx
    import tf2onnx

    serve, spec = serving_function(model, norm)
    handler = _Collect()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=[spec], opset=opset
        )
    except Exception as err:  # noqa: BLE001  tf2onnx raises many kinds
        raise ExportError(_onnx_message(model, str(err), handler.lines)) from None
    finally:
        logger.removeHandler(handler)
    if _logged_ops(handler.lines):
        raise ExportError(_onnx_message(model, "", handler.lines))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ExportError(_onnx_message(model, str(err), handler.lines)) from None
    _rename_output(proto, OUTPUT_NAME)
    files.write_bytes_atomic(path, proto.SerializeToString())


def write_litert(model, path, *, norm):
    """A LiteRT flatbuffer (`.tflite`) of TFLite builtin ops.

    Converted from a temporary SavedModel's `serve` signature: converting
    the concrete function directly keeps Keras 3 variables as resource
    variables, which LiteRT's XNNPACK path reads as garbage (NaN outputs).
    AveragePooling3D (Model3D1_224's time pool) has no TFLite builtin, so
    the converted copy computes it from strided slices (`_builtin_pools`).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kf-export-") as tmp_dir:
        saved = os.path.join(tmp_dir, "saved_model")
        write_saved_model(_builtin_pools(model), saved, norm=norm)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved, signature_keys=["serve"]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as err:  # noqa: BLE001  ConverterError and others
            raise ExportError(_litert_message(model, str(err))) from None
    files.write_bytes_atomic(path, flatbuffer)


def _builtin_pools(model):
    """`model`, or a copy with the same weights whose top-level "valid"
    AveragePooling3D layers are `SlicedAveragePooling3D` (TFLite builtins
    only). Other layers are cloned from their configs."""
    import keras

    def is_pool(layer):
        return (
            isinstance(layer, keras.layers.AveragePooling3D)
            and layer.padding == "valid"
            and layer.data_format == "channels_last"
        )

    if not any(is_pool(layer) for layer in model.layers):
        return model
    layer_class = _sliced_pool_class()

    def clone(layer):
        if is_pool(layer):
            return layer_class(layer.pool_size, layer.strides, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _sliced_pool_class():
    """A Keras layer class, defined on first use so that importing this
    module (the CLI does, for `FORMATS`) does not import Keras."""
    import keras
    import tensorflow as tf

    class SlicedAveragePooling3D(keras.layers.Layer):
        """"valid" AveragePooling3D as a separable box mean: along T, H and
        W in turn, the mean of `k` strided slices (StridedSlice, Add, Mul)."""

        def __init__(self, pool_size, strides, **kwargs):
            super().__init__(**kwargs)
            self.pool_size, self.strides = tuple(pool_size), tuple(strides)

        def call(self, x):
            for axis, (k, s) in enumerate(zip(self.pool_size, self.strides), 1):
                if k == 1 and s == 1:
                    continue
                size = x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]
                count = (size - k) // s + 1
                # end_mask: every other axis is taken whole.
                mask = 0b11111 & ~(1 << axis)
                total = 0.0
                for i in range(k):
                    begin, end, step = [0] * 5, [0] * 5, [1] * 5
                    begin[axis], end[axis], step[axis] = i, i + s * (count - 1) + 1, s
                    total = total + tf.strided_slice(
                        x, begin, tf.stack(end), step, end_mask=mask
                    )
                x = total * (1.0 / k)
            return x

        def compute_output_shape(self, shape):
            out = list(shape)
            for axis, (k, s) in enumerate(zip(self.pool_size, self.strides), 1):
                out[axis] = None if shape[axis] is None else (shape[axis] - k) // s + 1
            return tuple(out)

    return SlicedAveragePooling3D


def _litert_message(model, reason):
    ops = sorted(set(re.findall(r"'tf\.(\w+)'", reason)))
    what = (
        f"the TensorFlow op(s) {', '.join(ops)} have no TFLite builtin kernel"
        if ops
        else _first_line(reason)
    )
    return (
        f"LiteRT cannot convert model {model.name!r}: {what}. Select-TF (Flex) "
        "ops are not enabled because a plain LiteRT runtime cannot run them; "
        "export this family as saved_model or onnx instead."
    )


class _Collect(logging.Handler):
    """Keeps tf2onnx's error lines: they name the ops it could not convert."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _rename_output(proto, name):
    """Renames the graph's single output (tf2onnx calls it `Identity:0`)."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def _logged_ops(log_lines):
    """TF op types tf2onnx logged as unsupported, sorted."""
    text = "\n".join(log_lines)
    ops = re.findall(r"Tensorflow op \[[^\]]*: (\w+)\] is not supported", text)
    for counter in re.findall(r"Unsupported ops: Counter\(\{([^}]*)\}", text):
        ops += re.findall(r"'(\w+)'", counter)
    return sorted(set(ops))


def _onnx_message(model, reason, log_lines):
    ops = _logged_ops(log_lines)
    what = (
        f"the TensorFlow op(s) {', '.join(ops)} have no ONNX (opset {ONNX_OPSET}) "
        "conversion in tf2onnx"
        if ops
        else _first_line(reason)
    )
    return (
        f"ONNX cannot convert model {model.name!r}: {what}. Export this family as "
        "saved_model (or litert, where it converts) instead."
    )


def _first_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "the converter gave no reason"


def output_path(path, format):
    """`path` with the format's suffix added when it lacks it."""
    suffix = SUFFIXES[format]
    return path if not suffix or str(path).endswith(suffix) else f"{path}{suffix}"
