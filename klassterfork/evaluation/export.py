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

Each file is written to a temporary name beside the target, then renamed.
A model whose graph holds an op the format cannot express raises
`ExportError` naming the op.

tf2onnx and ai-edge-litert are the `export` extra; they are imported only by
the format that needs them.
"""

import logging
import os
import re
import shutil

from klassterfork.files import atomic_path

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
            one output.
    """
    import tensorflow as tf

    from klassterfork.data import transforms

    if len(model.inputs) != 1 or isinstance(model.output, (dict, list, tuple)):
        raise ExportError(
            "export needs a single-input, single-output classifier. Received: "
            f"model {model.name!r} with {len(model.inputs)} input(s) and outputs "
            f"{getattr(model, 'output_names', '?')}"
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
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(tmp, verbose=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


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
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())


def write_litert(model, path, *, norm):
    """A LiteRT flatbuffer (`.tflite`) of TFLite builtin ops.

    Converted from a temporary SavedModel's `serve` signature: converting
    the concrete function directly keeps Keras 3 variables as resource
    variables, which LiteRT's XNNPACK path reads as garbage (NaN outputs).
    """
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kf-export-") as tmp_dir:
        saved = os.path.join(tmp_dir, "saved_model")
        write_saved_model(model, saved, norm=norm)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved, signature_keys=["serve"]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as err:  # noqa: BLE001  ConverterError and others
            raise ExportError(_litert_message(model, str(err))) from None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)


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
