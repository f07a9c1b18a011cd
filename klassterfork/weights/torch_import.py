"""PyTorch state dicts -> klassterfork Keras models.

Four checkpoint layouts are understood (`FAMILIES`):

- "resnet3d": torchvision `r2plus1d_18` / `r3d_18` / `mc3_18`
  (`stem.0.weight`, `layer1.0.conv1.0.0.weight`, `layer1.0.conv1.1.*`,
  `layer2.0.downsample.0.weight`, `fc.weight`, ...) -> `R2Plus1D18`,
  `R3D18`, `MC3_18` and the generic `R2Plus1D`.
- "resnet2d": torchvision `resnet50` (`conv1.weight`, `bn1.*`,
  `layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, `fc.weight`)
  -> `TSN` with temporal "none" or "tsm". TSM checkpoints
  (`module.base_model.layer1.0.conv1.net.weight`, `module.new_fc.weight`)
  are the same layout once the prefixes and the shift wrapper's `.net` are
  dropped (`normalize_keys`).
- "tdn": TDN checkpoints (MCG-NJU/TDN, `module.base_model.*`,
  `module.new_fc.*`) -> `TSN(temporal="tdn")`. Keras layer -> torch module
  (`_TDN_NAMES`, `_TDN_BLOCK`): `conv1`, `bn1`, `conv1_temp` (unused by the
  reference's forward; the file holds it twice, also as `conv1_temp1`,
  which must be equal: `DUPLICATES`), `diff_conv1` / `diff_bn1` ->
  `conv1_5.0` / `conv1_5.1`, `diff_stage1_block{b}_*` ->
  `resnext_layer1.{b-1}.*`, `stage{s}_block{b}_*` -> `layer{s}_bak.{b-1}.*`
  with `_mse_{conv1,bn1,conv2,conv3,bn3,conv3_smallscale2,...}` ->
  `.mse.*` and `_shift` -> `.shift.conv`, `logits` -> `new_fc`.
- "vit": VideoMAE ViT (`patch_embed.proj.weight`, `blocks.N.norm1.*`,
  `blocks.N.attn.qkv.weight`, `blocks.N.attn.q_bias`, `blocks.N.attn.v_bias`,
  `blocks.N.attn.proj.*`, `blocks.N.mlp.fc1.*`, `fc_norm.*`, `head.*`) ->
  `VideoViT` (no frozen block). The sinusoid positions are fixed, not
  weights, in both.

Conversions: conv kernels (out, in, *k) -> channels-last (*k, in, out);
depthwise (C, 1, kh, kw) -> (kh, kw, C, 1); TDN's shift Conv1d (C, 1, 3)
-> `LearnableShift.kernel` (3, C); Linear (out, in) -> Dense (in, out);
BatchNorm weight / bias / running_mean / running_var -> gamma / beta /
moving_mean / moving_variance (both models use epsilon 1e-5;
`num_batches_tracked` is ignored); the VideoMAE qkv weight is kept fused
(`QVBiasAttention.qkv_kernel` = `qkv.weight.T`). The models pad strided
convs explicitly as torch does, so the outputs agree (the tests compare
logits with independently written PyTorch models within 1e-4).
"""

import difflib
import re

import numpy as np

FAMILIES = ("resnet3d", "resnet2d", "tdn", "vit")
HEAD_LAYERS = ("logits", "embedding_dense")
# Prefixes of wrapped checkpoints: DataParallel, TSM/TDN's TSN wrapper,
# VideoMAE's pre-training encoder.
STRIP_PREFIXES = ("module.", "base_model.", "encoder.", "backbone.")

_RESNET3D_STEM = {
    "2plus1d": {"stem_conv1": "stem.0", "stem_bn1": "stem.1",
                "stem_conv2": "stem.3", "stem_bn2": "stem.4"},
    "3d": {"stem_conv1": "stem.0", "stem_bn1": "stem.1"},
}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)_(.+)")
_RESNET3D_BLOCK = {  # keras suffix -> torch suffix inside layer{s}.{b - 1}
    r"conv(\d)_spatial": r"conv\1.0.0",
    r"conv(\d)_spatial_bn": r"conv\1.0.1",
    r"conv(\d)_temporal": r"conv\1.0.3",
    r"conv(\d)": r"conv\1.0",
    r"bn(\d)": r"conv\1.1",
    r"downsample_conv": "downsample.0",
    r"downsample_bn": "downsample.1",
}
_RESNET2D_BLOCK = {
    r"(conv\d|bn\d)": r"\1",
    r"downsample_conv": "downsample.0",
    r"downsample_bn": "downsample.1",
}
_TDN_NAMES = {
    "conv1": "conv1", "bn1": "bn1", "conv1_temp": "conv1_temp",
    "diff_conv1": "conv1_5.0", "diff_bn1": "conv1_5.1",
}
_TDN_BLOCK = {
    **_RESNET2D_BLOCK,
    r"mse_(conv\d|bn\d|conv3_smallscale\d|bn3_smallscale\d)": r"mse.\1",
    r"shift": "shift.conv",
}
# Keys a reference registers twice (one module under two names): the copy
# must equal the key that is loaded, and then counts as used.
DUPLICATES = {"conv1_temp1.": "conv1_temp."}
_VIT_BLOCK = re.compile(r"block(\d+)_(norm1|norm2|attn|fc1|fc2)")


def _block_name(name, table, stage_format="layer{}"):
    match = _BLOCK.fullmatch(name)
    if not match:
        return None
    stage, block, rest = match.groups()
    for pattern, template in table.items():
        if re.fullmatch(pattern, rest):
            suffix = re.sub(pattern, template, rest)
            return f"{stage_format.format(stage)}.{int(block) - 1}.{suffix}"
    return None


def torch_prefix(family, layer_name):
    """The torch module prefix of a Keras layer, or None if it has none.

    E.g. ("resnet3d", "stage2_block1_conv1_temporal") -> "layer2.0.conv1.0.3",
    ("vit", "block3_attn") -> "blocks.3.attn", ("resnet2d", "logits") -> "fc",
    ("tdn", "stage2_block1_mse_conv3_smallscale2") ->
    "layer2_bak.0.mse.conv3_smallscale2".

    Args:
        family: str. One of `FAMILIES`.
        layer_name: str. A Keras layer name of that family's models.

    Returns:
        str or None.
    """
    if layer_name == "logits":
        return "head" if family == "vit" else "fc"
    if family == "resnet3d":
        for stem in _RESNET3D_STEM.values():
            if layer_name in stem:
                return stem[layer_name]
        return _block_name(layer_name, _RESNET3D_BLOCK)
    if family == "resnet2d":
        if layer_name in ("conv1", "bn1"):
            return layer_name
        return _block_name(layer_name, _RESNET2D_BLOCK)
    if family == "tdn":
        if layer_name in _TDN_NAMES:
            return _TDN_NAMES[layer_name]
        if layer_name.startswith("diff_"):
            return _block_name(layer_name[len("diff_"):], _RESNET2D_BLOCK,
                               "resnext_layer{}")
        return _block_name(layer_name, _TDN_BLOCK, "layer{}_bak")
    if family == "vit":
        if layer_name in ("patch_embed", "fc_norm"):
            return {"patch_embed": "patch_embed.proj", "fc_norm": "fc_norm"}[layer_name]
        match = _VIT_BLOCK.fullmatch(layer_name)
        if match:
            i, part = match.groups()
            part = {"fc1": "mlp.fc1", "fc2": "mlp.fc2"}.get(part, part)
            return f"blocks.{i}.{part}"
        return None
    raise ValueError(
        f"`family` must be one of {list(FAMILIES)}. Received: family={family!r}"
    )


def normalize_keys(state_dict):
    """Drops wrapper prefixes and renames TSM/TSN keys to torchvision's.

    `module.base_model.layer1.0.conv1.net.weight` -> `layer1.0.conv1.weight`,
    `module.new_fc.weight` -> `fc.weight`; `num_batches_tracked` is dropped.

    Args:
        state_dict: dict str -> array.

    Returns:
        dict str -> array with the normalized names.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        key = key.replace(".net.", ".")
        if key.startswith("new_fc."):
            key = "fc." + key[len("new_fc."):]
        out[key] = value
    return out


def load_state_dict(path):
    """Reads a PyTorch checkpoint with `torch.load(weights_only=True)`.

    Accepts a bare state dict or one nested under "state_dict", "model" or
    "module" (VideoMAE / TSM / mmaction files).

    Args:
        path: str or path. A `.pth` / `.pt` file.

    Returns:
        dict str -> float32 / int numpy array, keys as in the file.

    Raises:
        ImportError: torch is not installed (`pip install .[torch]`).
        ValueError: the file holds no dict of tensors.
    """
    try:
        import torch
    except ImportError as err:  # torch is an optional extra
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch: "
            "pip install 'klassterfork[torch]'"
        ) from err
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor), possibly under "
            f"'state_dict', 'model' or 'module'. Received: {type(obj).__name__}"
        )
    return {
        k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.numpy()
        for k, v in obj.items()
        if hasattr(v, "numpy")
    }


def infer_family(model):
    """"vit", "resnet3d", "tdn" or "resnet2d" from the model's layer names."""
    names = {layer.name for layer in model.layers}
    if "patch_embed" in names:
        return "vit"
    if "stem_conv1" in names:
        return "resnet3d"
    if "conv1_temp" in names:
        return "tdn"
    if "conv1" in names and "stage1_block1_conv3" in names:
        return "resnet2d"
    raise ValueError(
        f"Model '{model.name}' has no known PyTorch layout (accepted: R2Plus1D / "
        "R3D / MC3, TSN none/tsm/tdn, VideoViT)."
    )


def _to_keras(layer, prefix, sd):
    """The torch tensors of one layer, converted to `layer.get_weights()`
    order and layout. Returns (arrays, used keys)."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Conv3D", "Dense", "DepthwiseConv2D", "UnusedConv2D"):
        keys = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if layer.use_bias else [])
    elif kind == "LearnableShift":
        keys = [f"{prefix}.weight"]
    elif kind == "BatchNormalization":
        stats = ("weight", "bias", "running_mean", "running_var")
        keys = [f"{prefix}.{k}" for k in stats]
    elif kind == "LayerNormalization":
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
    elif kind == "QVBiasAttention":
        keys = [f"{prefix}.{k}" for k in ("qkv.weight", "q_bias", "v_bias",
                                           "proj.weight", "proj.bias")]
    else:
        raise ValueError(f"Layer '{layer.name}' ({kind}) has no PyTorch counterpart.")
    missing = [k for k in keys if k not in sd]
    if missing:
        close = difflib.get_close_matches(missing[0], list(sd), n=3, cutoff=0.6)
        raise KeyError(
            f"Checkpoint lacks `{missing[0]}` for layer '{layer.name}'. "
            f"Close keys: {close or 'none'}"
        )
    arrays = [np.asarray(sd[k]) for k in keys]
    w = arrays[0]
    if kind in ("Conv2D", "Conv3D", "UnusedConv2D"):
        arrays[0] = np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
    elif kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        arrays[0] = np.transpose(w, (2, 3, 0, 1))
    elif kind == "LearnableShift":  # Conv1d (C, 1, 3) -> (3, C)
        arrays[0] = w[:, 0, :].T
    elif kind == "Dense":
        arrays[0] = w.T
    elif kind == "QVBiasAttention":
        arrays[0], arrays[3] = w.T, arrays[3].T
    return arrays, keys


def import_state_dict(
    model, state_dict, *, family=None, load_head=True, source="checkpoint"
):
    """Copies a PyTorch state dict into a Keras model, in place.

    Args:
        model: `keras.Model` of a supported family (see the module doc).
        state_dict: dict str -> array (e.g. from `load_state_dict`); wrapper
            prefixes are removed here (`normalize_keys`).
        family: str or None. One of `FAMILIES`; None infers it from the
            layer names. Defaults to None.
        load_head: bool. Also copy the classifier (`fc` / `head` ->
            `logits`); False leaves the model's head as initialised (another
            class count). Defaults to True.
        source: str. Named in error messages. Defaults to "checkpoint".

    Returns:
        dict with "loaded" (Keras layer names), "skipped" (head layers left
        as they were) and "unused" (checkpoint keys nothing read; a
        `DUPLICATES` copy equal to a loaded key counts as read).

    Raises:
        ValueError: a layer without a PyTorch name, a shape mismatch (naming
            the key, both shapes and `source`).
        KeyError: a tensor the model needs is not in the checkpoint.
    """
    family = family or infer_family(model)
    sd = normalize_keys(state_dict)
    used, loaded, skipped = set(), [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in HEAD_LAYERS and not load_head:
            skipped.append(layer.name)
            continue
        prefix = torch_prefix(family, layer.name)
        if prefix is None:
            raise ValueError(
                f"{source}: layer '{layer.name}' of model '{model.name}' has no "
                f"{family} PyTorch name (supported: the torchvision / VideoMAE "
                "layouts)."
            )
        try:
            arrays, keys = _to_keras(layer, prefix, sd)
        except KeyError as err:
            raise KeyError(f"{source}: {err.args[0]}") from None
        for key, got, want in zip(keys, arrays, layer.get_weights()):
            if got.shape != want.shape:
                raise ValueError(
                    f"{source}: `{key}` has shape {tuple(got.shape)} (as Keras "
                    f"layout); layer '{layer.name}' expects {tuple(want.shape)}."
                )
        layer.set_weights(arrays)
        used.update(keys)
        loaded.append(layer.name)
    for key in set(sd) - used:
        for copy, original in DUPLICATES.items():
            twin = original + key[len(copy):]
            if (key.startswith(copy) and twin in used
                    and np.array_equal(sd[key], sd[twin])):
                used.add(key)
    head_keys = {f"{torch_prefix(family, 'logits')}.{k}" for k in ("weight", "bias")}
    unused = sorted(k for k in set(sd) - used if load_head or k not in head_keys)
    return {"loaded": loaded, "skipped": skipped, "unused": unused}


def checkpoint_num_classes(state_dict, family):
    """Class count of the checkpoint's classifier, or None if it has none."""
    sd = normalize_keys(state_dict)
    weight = sd.get(f"{torch_prefix(family, 'logits')}.weight")
    return None if weight is None else int(weight.shape[0])
