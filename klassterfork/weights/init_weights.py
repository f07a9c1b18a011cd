"""Start a model from pretrained weights: the stage key `init_weights`.

    init_weights: {path: FILE, exclude: [regex, ...], strict: false}

`load_into(model, path, exclude=..., strict=...)` copies what fits from
FILE into the model, in place, and returns an `InitReport`. The format is
found from the file's content (magic bytes and structure), never its name
(`FORMATS`):

- "keras": a `.keras` zip (config.json + model.weights.h5), e.g. a run's
  `stageN/model.keras`, `best.keras` or `kf-import-torch` output;
- "keras_weights_h5": a Keras 3 `.weights.h5`;
- "keras_legacy_h5": a Keras 2 h5, as `keras.applications` ships its
  ImageNet no-top weights (ResNet50 into TSN / TSM / TDN / MSN, InceptionV3
  and VGG16 into `TwoStream2D`); ResNet50 is ResNet v1, so a TSN computes
  its function only when built with `stride_in_1x1: true` (the report's
  note says which layout the model has);
- "torch": a PyTorch file (zip or legacy pickle; a bare state dict or one
  under "state_dict" / "model" / "module"), read with
  `torch.load(weights_only=True)` and paired through `torch_import`'s
  names (families resnet3d, resnet2d, tdn, vit);
- "tf_checkpoint": a run's `stageN/checkpoints/` folder (or one checkpoint
  prefix); only the `model` part is read.

How tensors pair is in `keras_sources` (Keras layouts) and `_pair_torch`.
A paired tensor whose shape differs (a 400-class head, a 101-class model)
leaves the variable as initialised, as does an `exclude` pattern
(`re.search` on the layer path, e.g. "logits" or "rgb_backbone/conv1_conv");
both are reported under "initialized" with the reason. Values are assigned
as the same numpy arrays everywhere, so every replica and worker starts
identical.
"""

import collections
import dataclasses
import hashlib
import logging
import os
import pickle
import re
import zipfile

import h5py
import numpy as np

from klassterfork.weights import keras_sources, torch_import

FORMATS = ("keras", "keras_weights_h5", "keras_legacy_h5", "torch", "tf_checkpoint")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy format opens with its pickled magic number (protocol 2).
_TORCH_PICKLE_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_SHOWN = 12  # names listed in one paragraph / error before "... and N more"

Target = collections.namedtuple("Target", "name layer_path variable layer")
logger = logging.getLogger(__name__)


class InitWeightsError(ValueError):
    """A weights file that cannot be loaded as asked; names the path."""


@dataclasses.dataclass
class InitReport:
    """What `load_into` did.

    Attributes:
        path, sha256, format: the source file (`format` one of `FORMATS`).
        loaded: list of str. Model variables now holding the file's values.
        initialized: list of {"name", "reason"}. Variables left as they were.
        unused: list of str. File tensors that matched no variable.
        notes: list of str. Caveats of the pairing (e.g. differing nets).
    """

    path: str
    sha256: str
    format: str
    loaded: list
    initialized: list
    unused: list
    notes: list = dataclasses.field(default_factory=list)

    def to_json(self):
        """A JSON-ready dict: source, loaded, initialized, unused, notes."""
        return {
            "source": {"path": self.path, "sha256": self.sha256,
                       "format": self.format},
            "loaded": list(self.loaded),
            "initialized": [dict(item) for item in self.initialized],
            "unused": list(self.unused),
            "notes": list(self.notes),
        }

    def paragraph(self):
        """One log paragraph: counts, then the initialized names (reasons)."""
        text = (f"init_weights: {self.path} ({self.format}, sha256 "
                f"{self.sha256[:12]}): {len(self.loaded)} variables loaded, "
                f"{len(self.initialized)} left initialized, "
                f"{len(self.unused)} file tensors unused.")
        if self.initialized:
            items = [f"{i['name']} ({i['reason']})" for i in self.initialized]
            text += " Initialized: " + _shorten(items) + "."
        if self.unused:
            text += " Unused: " + _shorten(self.unused) + "."
        for note in self.notes:
            text += f" Note: {note}."
        return text


def _shorten(items, shown=_SHOWN):
    if len(items) <= shown:
        return ", ".join(items)
    return ", ".join(items[:shown]) + f", ... and {len(items) - shown} more"


def detect_format(path):
    """The format of `path` (one of `FORMATS`), from its content.

    Raises:
        InitWeightsError: the path is missing, unreadable or of no known
            format.
    """
    path = os.fspath(path)
    if os.path.isdir(path) or os.path.exists(f"{path}.index"):
        if keras_sources.checkpoint_prefix(path):
            return "tf_checkpoint"
        raise InitWeightsError(
            f"{path}: a folder without a TensorFlow checkpoint (no 'checkpoint' "
            f"file naming a prefix with an .index). Found: "
            f"{sorted(os.listdir(path))[:8] if os.path.isdir(path) else []}")
    if not os.path.exists(path):
        raise InitWeightsError(f"{path}: no such file or folder.")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        raise InitWeightsError(f"{path}: cannot be read ({err}).") from None
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head.startswith(_HDF5_MAGIC):
        return _h5_format(path)
    if head.startswith(_TORCH_PICKLE_MAGIC) or head[257:262] == b"ustar":
        return "torch"
    raise InitWeightsError(
        f"{path}: unknown weights format (first bytes {head[:8]!r}). Accepted: "
        "a .keras zip, a Keras .weights.h5 or keras.applications .h5, a "
        "PyTorch file (zip or pickle) or a TensorFlow checkpoint folder.")


def _zip_format(path):
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InitWeightsError(f"{path}: a zip that cannot be read ({err}).") from None
    if "config.json" in names and "model.weights.h5" in names:
        return "keras"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch"
    raise InitWeightsError(
        f"{path}: a zip that is neither a .keras file (config.json + "
        "model.weights.h5) nor a PyTorch file (*/data.pkl). Found: "
        f"{names[:8]}")


def _h5_format(path):
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:
                return "keras_legacy_h5"
            if "layers" in f or "vars" in f:
                return "keras_weights_h5"
            found = sorted(f)[:8]
    except OSError as err:
        raise InitWeightsError(f"{path}: an HDF5 file that cannot be read "
                               f"({err}).") from None
    raise InitWeightsError(
        f"{path}: an HDF5 file of no Keras layout (neither 'layer_names' nor "
        f"'layers' / 'vars'). Found groups: {found}")


def file_sha256(path):
    """sha256 of a file, or of a checkpoint's files (names and bytes)."""
    digest = hashlib.sha256()
    if os.path.isfile(path):
        files = [path]
    else:
        prefix = keras_sources.checkpoint_prefix(path)
        folder = os.path.dirname(prefix)
        files = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                       if n.startswith(os.path.basename(prefix) + "."))
    for name in files:
        digest.update(os.path.basename(name).encode())
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def target_variables(model):
    """{id(variable): Target} in layer order; a variable is named after the
    innermost layer holding it ("rgb_backbone/conv1_conv/kernel")."""
    out = {}

    def walk(layer, path):
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            walk(sub, f"{path}/{sub.name}" if path else sub.name)
        for var in layer.weights:
            if id(var) not in out:
                where = path or layer.name
                short = var.name.split("/")[-1]
                out[id(var)] = Target(f"{where}/{short}", where, var, layer)

    walk(model, "")
    return out


def _pair_torch(model, path, targets):
    """Pairs a PyTorch state dict through `torch_import`'s layer names."""
    try:
        state = torch_import.load_state_dict(path)
        family = torch_import.infer_family(model)
    except ImportError:
        raise InitWeightsError(f"{path}: a PyTorch file; reading it needs torch "
                               "(pip install 'klassterfork[torch]').") from None
    except ValueError as err:
        raise InitWeightsError(f"{path}: {err}") from None
    sd = torch_import.normalize_keys(state)
    pairs, missing = {}, {}
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torch_import.torch_prefix(family, layer.name)
        try:
            if prefix is None:
                raise ValueError(f"no name in the {family} PyTorch layout")
            arrays, keys = torch_import._to_keras(layer, prefix, sd)
        except (KeyError, ValueError) as err:
            found = re.search(r"lacks `([^`]+)`", str(err))
            why = f"no `{found.group(1)}`" if found else str(err).strip("'\"")
            for var in layer.weights:
                missing[id(var)] = f"not in the file ({why})"
            continue
        for var, key, array in zip(layer.weights, keys, arrays):
            pairs[id(var)] = (key, array)
    consumed = set()
    used = {key for key, _ in pairs.values()}
    for key in sd:  # a module the reference registers twice (DUPLICATES)
        for copy, original in torch_import.DUPLICATES.items():
            twin = original + key[len(copy):]
            if key.startswith(copy) and twin in used and np.array_equal(
                    sd[key], sd[twin]):
                consumed.add(key)
    notes = []
    if family in ("resnet2d", "tdn") and keras_sources.is_stride_in_1x1(
            {layer.name: layer for layer in model.layers}):
        notes.append(
            "this model is ResNet v1 (stride_in_1x1: true, stride on the first "
            "1x1 conv of stages 2-4); the PyTorch layout is torchvision's v1.5 "
            "(stride on the 3x3): the weights load by name, but stages 2-4 "
            "compute a different function than in the file's network (build "
            "the model with stride_in_1x1: false, the default, to match it)")
    return keras_sources.Plan(pairs, sorted(sd), consumed=consumed,
                              missing=missing, notes=notes)


def _pair(model, path, fmt, targets):
    if fmt == "torch":
        return _pair_torch(model, path, targets)
    if fmt == "tf_checkpoint":
        prefix = keras_sources.checkpoint_prefix(path)
        return keras_sources.pair_checkpoint(model, prefix, targets)
    if fmt == "keras":
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as raw:
            with h5py.File(raw, "r") as f:
                return keras_sources.pair_keras_h5(model, f, targets)
    with h5py.File(path, "r") as f:
        if fmt == "keras_legacy_h5":
            return keras_sources.pair_legacy_h5(model, f, targets)
        return keras_sources.pair_keras_h5(model, f, targets)


def _check_exclude(exclude):
    if isinstance(exclude, str):
        exclude = [exclude]
    compiled = []
    for i, pattern in enumerate(exclude):
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as err:
            raise InitWeightsError(
                f"init_weights.exclude[{i}] must be a regular expression. "
                f"Received: {pattern!r} ({err})") from None
    return compiled


def load_into(model, path, *, exclude=(), strict=False):
    """Copies the weights of `path` that fit into `model`, in place.

    Args:
        model: `keras.Model`, built.
        path: str or path. A file or checkpoint folder (module docstring).
        exclude: list of str. Regular expressions; a layer whose path
            (`re.search`) matches keeps its initialisation. Defaults to ().
        strict: bool. Raise instead of loading when a variable is left
            initialized (other than by `exclude`) or a file tensor is
            unused. Defaults to False.

    Returns:
        `InitReport`.

    Raises:
        InitWeightsError: a missing, unreadable or unknown file, or a strict
            mismatch (nothing is assigned then). The message names `path`.
    """
    path = os.fspath(path)
    patterns = _check_exclude(exclude)
    fmt = detect_format(path)
    targets = target_variables(model)
    try:
        plan = _pair(model, path, fmt, targets)
    except InitWeightsError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, EOFError,
            pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise InitWeightsError(f"{path}: cannot be read as {fmt} "
                               f"({type(err).__name__}: {err}).") from None
    loads, initialized, matched = [], [], set(plan.consumed)
    for vid, target in targets.items():
        reason, item = None, plan.pairs.get(vid)
        if item is not None:
            matched.add(item[0])
        hit = [i for i, p in enumerate(patterns) if p.search(target.layer_path)]
        if hit:
            reason = f"excluded by init_weights.exclude[{hit[0]}]"
        elif item is None:
            reason = plan.missing.get(vid, "not in the file")
        elif tuple(item[1].shape) != tuple(target.variable.shape):
            reason = (f"shape {tuple(item[1].shape)} in the file, "
                      f"{tuple(target.variable.shape)} here")
        if reason:
            initialized.append({"name": target.name, "reason": reason})
        else:
            loads.append((target, item[1]))
    unused = [key for key in plan.keys if key not in matched]
    report = InitReport(path, file_sha256(path), fmt,
                        [t.name for t, _ in loads], initialized, unused,
                        list(plan.notes))
    if strict:
        _raise_if_mismatch(report)
    for target, array in loads:
        target.variable.assign(np.asarray(array, dtype=target.variable.dtype))
    logger.info(report.paragraph())
    return report


def _raise_if_mismatch(report):
    fresh = [f"{i['name']} ({i['reason']})" for i in report.initialized
             if not i["reason"].startswith("excluded by")]
    if not fresh and not report.unused:
        return
    parts = []
    if fresh:
        parts.append(f"{len(fresh)} model variables would stay initialized: "
                     + _shorten(fresh))
    if report.unused:
        parts.append(f"{len(report.unused)} file tensors match nothing: "
                     + _shorten(report.unused))
    raise InitWeightsError(
        f"{report.path} ({report.format}): strict loading refused; "
        + "; ".join(parts) + ". Accepted: every variable loaded or excluded by "
        "`exclude`, and every file tensor used (or set strict: false).")

