"""Readers that pair a Keras / TensorFlow weights file with a model's variables.

Used by `init_weights.load_into`; each `pair_*` function returns a `Plan`:
which file tensor each model variable gets (before any shape check), every
file tensor's key, and notes for the report. Three layouts:

- Keras 3 HDF5 (`.weights.h5`, and `model.weights.h5` inside a `.keras`
  zip): one group per saveable, `layers/<class_name>[_k]/vars/<i>`, whose
  `vars` group carries the layer name (attribute "name"). Layers pair by
  their name path ("rgb_backbone/conv1_conv"), then, for layers whose name
  the file lacks, by the structural path Keras itself uses when it loads.
- Keras 2 / `keras.applications` HDF5 (`*_notop.h5`): attributes
  `layer_names` and per layer `weight_names` ("conv1_conv/kernel:0").
  Layers pair by name (also inside a nested backbone model). torchvision-
  layout ResNet-50s (TSN) name their layers differently and put the stride
  on the 3x3 conv unless built with `stride_in_1x1=True`: see
  `_applications_resnet50`.
- `tf.train.Checkpoint(model=...)` folders written by the trainer: the
  checkpoint's object graph is followed from its `model` node on the model
  being loaded (`_operations/13/_kernel`).
"""

import dataclasses
import re

import h5py
import numpy as np
import tensorflow as tf
from keras.src.saving import saving_lib
from tensorflow.core.protobuf import trackable_object_graph_pb2

# keras.applications' ResNet50 BatchNormalization epsilon (resnet.py).
APPLICATIONS_BN_EPSILON = 1.001e-5
_APP_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)")


@dataclasses.dataclass
class Plan:
    """What a reader found.

    pairs: id(variable) -> (file key, array). keys: every file tensor.
    consumed: keys used without a pair of their own (a folded bias).
    notes: caveats for the report. missing: id(variable) -> why it has no
    pair, where more is known than "not in the file".
    """

    pairs: dict
    keys: list
    consumed: set = dataclasses.field(default_factory=set)
    notes: list = dataclasses.field(default_factory=list)
    missing: dict = dataclasses.field(default_factory=dict)


class _Recorder(saving_lib.H5IOStore):
    """Stands in for Keras' weights store: records, for every saveable,
    its structural path, its name and its variables, in the order Keras
    saves and loads them."""

    def __init__(self):  # no file: nothing of H5IOStore's state is used
        self.groups = {}

    def make(self, path, metadata=None):
        store = {}
        self.groups[path] = ((metadata or {}).get("name"), store)
        return store

    def __bool__(self):
        return True


def _name_paths(names):
    """struct path -> layer name path ("inner/logits"); the root's name is
    left out, so a file of another model's name pairs the same."""
    out = {}
    for struct in names:
        parts, prefix = [], ""
        for token in struct.split("/"):
            prefix = f"{prefix}/{token}" if prefix else token
            if prefix in names and names[prefix]:
                parts.append(names[prefix])
        out[struct] = "/".join(parts)
    return out


def keras_target_groups(model):
    """[(struct path, name path, [variables])] as Keras walks `model`."""
    recorder = _Recorder()
    # The function Keras saves with: its paths are those of the file.
    saving_lib._save_state(model, recorder, None, "", set())
    names = {path: name for path, (name, _) in recorder.groups.items()}
    name_paths = _name_paths(names)
    return [(path, name_paths[path], [store[k] for k in sorted(store, key=int)])
            for path, (_, store) in recorder.groups.items() if store]


def read_keras_h5(h5file):
    """[(struct path, name path, [(key, array)])] of a Keras 3 weights file.

    Only the model: the root `vars` and `layers/...`; the optimizer and
    RNG states (`seed_generator`) are not weights.
    """
    groups, names = {}, {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and (name == "vars" or name.endswith("/vars")):
            struct = name[: -len("vars")].rstrip("/")
            names[struct] = obj.attrs.get("name")
            if struct and not struct.startswith("layers"):
                return
            if "seed_generator" in struct.rsplit("/", 1)[-1]:
                return
            if len(obj):
                groups[struct] = [(f"{name}/{k}", np.asarray(obj[k]))
                                  for k in sorted(obj, key=int)]

    h5file.visititems(visit)
    name_paths = _name_paths(names)
    return [(s, name_paths[s], arrays) for s, arrays in groups.items()]


def pair_keras_h5(model, h5file, targets):
    """Pairs a Keras 3 weights file: by layer name path, then structure."""
    source = read_keras_h5(h5file)
    by_name = {name: arrays for _, name, arrays in source if name}
    by_struct = {struct: arrays for struct, _, arrays in source}
    pairs, taken, by_structure = {}, set(), 0
    for struct, name, variables in keras_target_groups(model):
        arrays = by_name.get(name)
        if arrays is None or id(arrays) in taken:
            arrays = by_struct.get(struct)
            if arrays is None or id(arrays) in taken:
                continue
            by_structure += 1
        taken.add(id(arrays))
        for var, item in zip(variables, arrays):
            if id(var) in targets:
                pairs[id(var)] = item
    keys = [key for _, _, arrays in source for key, _ in arrays]
    notes = [f"{by_structure} layer(s) paired by position (their names differ "
             "from the file's)"] if by_structure else []
    return Plan(pairs, keys, notes=notes)


def read_legacy_h5(h5file):
    """{layer name: [(variable name, key, array)]} of a Keras 2 h5 file."""
    root = h5file["model_weights"] if "model_weights" in h5file else h5file
    out = {}
    for layer in root.attrs["layer_names"]:
        layer = layer.decode() if isinstance(layer, bytes) else str(layer)
        group = root[layer]
        items = []
        for weight in group.attrs.get("weight_names", []):
            weight = weight.decode() if isinstance(weight, bytes) else str(weight)
            var_name = weight.split("/")[-1].split(":")[0]
            items.append((var_name, f"{layer}/{weight}", np.asarray(group[weight])))
        if items:
            out[layer] = items
    return out


def _layer_leaf(layer_path):
    return layer_path.rsplit("/", 1)[-1]


def _short(var):
    return var.name.split("/")[-1]


def _by_order(source, layers):
    """Keras' own rule for Keras 2 files (`load_weights` of a legacy h5):
    the i-th layer with weights gets the file's i-th; here only when every
    layer's variable names equal the file's, in order."""
    if len(source) != len(layers):
        return False
    return all([name for name, _, _ in items] == [_short(v) for _, v in variables]
               for items, variables in zip(source.values(), layers.values()))


def pair_legacy_h5(model, h5file, targets):
    """Pairs a keras.applications-style file, per (nested) model: by layer
    name when all the file's names are there, else by order as Keras does
    (InceptionV3's layers are auto-named: `conv2d_93` in one session is
    `conv2d_187` in the next); variables by name within a layer."""
    source = read_legacy_h5(h5file)
    keys = [key for items in source.values() for _, key, _ in items]
    consumed, notes = set(), []
    if "conv2_block1_1_conv" in source and any(
            t.layer_path == "stage1_block1_conv1" for t in targets.values()):
        source, consumed, notes = _applications_resnet50(source, targets)
    containers = {}  # parent model path -> {layer path: [(id, variable)]}
    for vid, t in targets.items():
        parent = t.layer_path.rpartition("/")[0]
        containers.setdefault(parent, {}).setdefault(t.layer_path, []).append(
            (vid, t.variable))
    pairs = {}
    for parent, layers in containers.items():
        names = {_layer_leaf(path) for path in layers}
        if not set(source) <= names and _by_order(source, layers):
            matched = zip(source.values(), layers.values())
            notes.append(f"{parent or model.name}: {len(layers)} layers paired "
                         "by order (the file's layer names differ), as Keras "
                         "loads such files")
        else:
            matched = ((source[_layer_leaf(path)], variables)
                       for path, variables in layers.items()
                       if _layer_leaf(path) in source)
        for items, variables in matched:
            named = {name: (key, array) for name, key, array in items}
            for vid, var in variables:
                if _short(var) in named:
                    pairs[vid] = named[_short(var)]
    return Plan(pairs, keys, consumed=consumed, notes=notes)


def _app_to_tsn(name):
    """keras.applications ResNet50 layer name -> TSN's, or None."""
    if name in ("conv1_conv", "conv1_bn"):
        return "conv1" if name.endswith("conv") else "bn1"
    match = _APP_BLOCK.fullmatch(name)
    if not match:
        return None
    stage, block, op, kind = match.groups()
    prefix = f"stage{int(stage) - 1}_block{block}"
    if op == "0":
        return f"{prefix}_downsample_{kind}"
    return f"{prefix}_{kind}{op}"


def _applications_resnet50(source, targets):
    """keras.applications ResNet50 -> TSN's torchvision-layout backbone.

    Renames the layers (`conv2_block1_1_conv` -> `stage1_block1_conv1`,
    `_0_` -> `downsample_`). A conv bias the model lacks is folded into the
    next BatchNormalization (mean' = mean - bias: exact), and gamma is
    rescaled from epsilon 1.001e-5 to the model's (exact). keras.applications
    is ResNet v1 (stride 2 on the first 1x1 conv of stages 3-5); a TSN built
    with `stride_in_1x1=True` is too and then computes the same function.
    The default TSN is torchvision's v1.5 (stride on the 3x3): the stem and
    the first stage compute the same function, later stages do not. Either
    way the report's note says which, since fine-tuning v1 weights in v1.5
    is common and not an error, but should not be silent.
    """
    layers = {_layer_leaf(t.layer_path): t.layer for t in targets.values()}
    out = {_app_to_tsn(name): {it[0]: it for it in items}
           for name, items in source.items() if _app_to_tsn(name) in layers}
    consumed = set()
    for name, stats in out.items():
        layer = layers[name]
        if hasattr(layer, "moving_mean"):  # epsilon 1.001e-5 -> the model's
            var, gamma = stats["moving_variance"][2], stats["gamma"]
            scale = np.sqrt(var + layer.epsilon) / np.sqrt(
                var + APPLICATIONS_BN_EPSILON)
            stats["gamma"] = (*gamma[:2], gamma[2] * scale)
            continue
        bn = re.sub(r"conv(\d?)$", r"bn\1", name)
        if "bias" in stats and not getattr(layer, "use_bias", True) and bn in out:
            bias, mean = stats.pop("bias"), out[bn]["moving_mean"]
            out[bn]["moving_mean"] = (*mean[:2], mean[2] - bias[2])
            consumed.add(bias[1])
    out = {name: list(stats.values()) for name, stats in out.items()}
    return out, consumed, [_resnet_layout_note(layers)]


def _resnet_layout_note(layers):
    """The report's note on keras.applications' v1 layout against the model's."""
    if is_stride_in_1x1(layers):
        return ("keras.applications ResNet50 is ResNet v1 (stride on the first "
                "1x1 conv of its stages conv3-conv5), as this model "
                "(stride_in_1x1: true): the weights load by name, conv biases "
                "folded into the BatchNorm means, and its ResNet computes "
                "keras.applications' function (TSM / TDN / MSN modules, if any, "
                "come on top)")
    return ("keras.applications ResNet50 is ResNet v1 (stride on the first 1x1 "
            "conv of its stages conv3-conv5); this model is torchvision's v1.5 "
            "(stride on the 3x3): the weights load by name, conv biases folded "
            "into the BatchNorm means, but stages 2-4 compute a different "
            "function than in keras.applications. To compute its function, "
            "build the model with `stride_in_1x1: true` (config: "
            "model.TSN.stride_in_1x1: true, i.e. "
            "`model: {TSN: {stride_in_1x1: true}}`)")


def is_stride_in_1x1(layers):
    """Whether a TSN-layout ResNet ({layer name: layer}) strides its 1x1
    (`stride_in_1x1=True`, ResNet v1) rather than its 3x3 (v1.5)."""
    first = layers.get("stage2_block1_conv1")
    return first is not None and tuple(first.strides) != (1, 1)


def checkpoint_prefix(path):
    """The checkpoint prefix of a folder (its latest) or of a prefix path."""
    if tf.io.gfile.isdir(path):
        return tf.train.latest_checkpoint(path)
    return path if tf.io.gfile.exists(f"{path}.index") else None


def _child(obj, local_name):
    """The object a checkpoint edge `local_name` leads to from `obj`."""
    try:
        if local_name.isdigit():
            return obj[int(local_name)]
        return getattr(obj, local_name)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def pair_checkpoint(model, prefix, targets):
    """Pairs what a `tf.train.Checkpoint` holds under its `model` edge.

    Follows the checkpoint's object graph from the `model` node on the
    model being loaded (edges are attribute names and list indices), so a
    variable the file keys elsewhere (`optimizer/_trainable_variables/0`,
    the shortest path TensorFlow picked) still pairs. Variables there that
    are not model weights (RNG states) are not counted.
    """
    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    root = {c.local_name: c.node_id for c in graph.nodes[0].children}
    if "model" not in root:
        raise ValueError(f"{prefix}: the checkpoint has no `model`. Found: "
                         f"{sorted(root)}")
    pairs, keys, seen = {}, [], set()
    stack = [(root["model"], model)]
    while stack:
        node_id, obj = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = graph.nodes[node_id]
        for attr in node.attributes:
            if attr.name != "VARIABLE_VALUE":
                continue
            if obj is not None and id(obj) in targets:
                pairs[id(obj)] = (attr.checkpoint_key,
                                  reader.get_tensor(attr.checkpoint_key))
                keys.append(attr.checkpoint_key)
            elif obj is None or hasattr(obj, "weights"):
                keys.append(attr.checkpoint_key)  # nothing here: unused
        for child in node.children:
            stack.append((child.node_id, None if obj is None
                          else _child(obj, child.local_name)))
    return Plan(pairs, sorted(keys))
