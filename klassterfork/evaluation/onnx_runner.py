"""Runs a `kf-export --format onnx` file where inference expects a Keras model.

The ONNX file holds standardization and softmax (`evaluation/export.py`):
it takes uint8 views and returns probabilities. `OnnxClassifier` shows the
surface `inference.check_model` / `predict_views` use (`name`, `inputs`,
`output`, `__call__`) and returns log-probabilities as "logits", so the
softmax `predict_views` applies gives back the file's probabilities.
`inference.load_setup` pairs it with `NO_NORM`: the views reach the file
as uint8, standardized once, inside it.
"""

import os
import types

import numpy as np

from klassterfork import files

NO_NORM = {"mode": "none", "mean": None, "std": None}


class OnnxClassifier:
    """An onnxruntime session of a uint8 clip classifier.

    Args:
        path: str. A `.onnx` file with one uint8 (B, T, H, W, 3) input and
            one (B, num_classes) probability output; a `gs://` / `ram://`
            path is read through `klassterfork.files` (onnxruntime opens
            local files only).
        providers: list of str or None. onnxruntime execution providers;
            None takes every available one (CUDA first where installed).

    Raises:
        ValueError: the file does not have that one input and one output.
        ImportError: onnxruntime is not installed (the `export` extra).
    """

    def __init__(self, path, providers=None):
        import onnxruntime

        source = str(path)
        if files.is_remote(source):
            with files.open_file(source, "rb") as f:
                source = f.read()
        self.session = onnxruntime.InferenceSession(
            source, providers=providers or onnxruntime.get_available_providers()
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(uint8)":
            raise ValueError(
                f"{path}: an ONNX clip classifier has one uint8 input and one output "
                "(as kf-export --format onnx writes). Received: inputs "
                f"{[(i.name, i.type) for i in inputs]}, "
                f"outputs {[o.name for o in outputs]}"
            )
        self.name = os.path.basename(str(path))
        self._input = inputs[0].name
        self.inputs = [types.SimpleNamespace(shape=_shape(inputs[0].shape))]
        self.output = types.SimpleNamespace(shape=_shape(outputs[0].shape))

    def __call__(self, views, training=False):
        """uint8 views (B, T, H, W, 3) -> float64 log-probabilities (B, K)."""
        del training  # inference only
        probs = self.session.run(None, {self._input: np.asarray(views, np.uint8)})[0]
        with np.errstate(divide="ignore"):  # a 0 probability stays 0 after softmax
            return np.log(np.asarray(probs, np.float64))


def _shape(dims):
    """ONNX dims (ints, or names for dynamic axes) -> a tuple with None."""
    return tuple(d if isinstance(d, int) else None for d in dims)
