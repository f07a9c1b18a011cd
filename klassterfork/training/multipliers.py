"""Per-variable learning-rate multipliers and weight-decay masks, by path.

Pure functions of variable paths (`keras.Variable.path`, e.g.
"block3_fc1/kernel", "logits/bias"); the optimizers in `optimizers.py` call
them once at `build` time. Keeping the rules here makes them testable
without an optimizer and keeps one spelling of each rule.

A multiplier scales the learning rate of one variable (like a PyTorch
parameter group's `lr`). It is NOT a gradient scale: Adam divides the
gradient by its running RMS, so scaling the gradient would cancel out.
"""

import re

# VideoViT layout (models/vit.py): "patch_embed/...", "pos_embed/...",
# "block{i}_..." with i 0-based, then "fc_norm/..." and the head. Paths may
# carry the model's name first ("sequential/block0_fc/kernel"), so patterns
# anchor on a path segment, `(^|/)`, not on the string start.
BLOCK_PATTERN = r"(^|/)block(\d+)_"
EMBED_PATTERN = r"(^|/)(patch_embed|pos_embed|cls_token)"


def _compile(pattern, arg):
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(
            f"`{arg}` must be a regular expression. Received: {arg}={pattern!r} ({err})"
        ) from None


def layer_decay_multipliers(
    paths,
    *,
    rate,
    num_layers=None,
    block_pattern=BLOCK_PATTERN,
    embed_pattern=EMBED_PATTERN,
):
    """Layer-wise learning-rate decay for ViTs (BEiT / VideoMAE fine-tuning).

    A variable in layer `l` gets `rate ** (num_layers + 1 - l)`, where the
    embeddings are layer 0, block `i` (0-based, the LAST group
    of `block_pattern`) is layer `i + 1`, and everything else (final norm,
    head) is layer `num_layers + 1`, i.e. multiplier 1. This is VideoMAE's
    `get_layer_id_for_vit` + `LayerDecayValueAssigner`.

    Args:
        paths: list of str. Variable paths.
        rate: float. Decay per layer, in (0, 1]. VideoMAE: 0.75.
        num_layers: int. Number of transformer blocks. Defaults to one more
            than the largest block index found in `paths`.
        block_pattern: str. Regex whose last group is the 0-based block
            index. Defaults to VideoViT's `(^|/)block(\\d+)_`.
        embed_pattern: str. Regex of the embedding variables (layer 0).

    Returns:
        dict {path: float}.

    Raises:
        ValueError: for a bad rate or pattern, or when no block matches.
    """
    if not 0 < float(rate) <= 1:
        raise ValueError(f"`rate` must be in (0, 1]. Received: rate={rate!r}")
    block_re = _compile(block_pattern, "block_pattern")
    embed_re = _compile(embed_pattern, "embed_pattern")
    if block_re.groups < 1:
        raise ValueError(
            "`block_pattern` must capture the block index in a group. "
            f"Received: block_pattern={block_pattern!r}"
        )
    layer_ids = {}
    for path in paths:
        if embed_re.search(path):
            layer_ids[path] = 0
        elif match := block_re.search(path):
            layer_ids[path] = int(match.group(block_re.groups)) + 1
        else:
            layer_ids[path] = None  # after the last block
    found = [i for i in layer_ids.values() if i]
    if num_layers is None:
        if not found:
            raise ValueError(
                f"no variable path matches block_pattern={block_pattern!r}; "
                f"give `num_layers`. First paths: {list(paths)[:5]}"
            )
        num_layers = max(found)
    if found and max(found) > num_layers:
        raise ValueError(
            f"`num_layers` must be >= the number of blocks ({max(found)}). "
            f"Received: num_layers={num_layers}"
        )
    top = num_layers + 1
    return {
        path: float(rate) ** (top - (top if i is None else i))
        for path, i in layer_ids.items()
    }


def pattern_multipliers(paths, rules):
    """Multipliers from `{regex: multiplier}` rules; the FIRST match wins.

    Rules are tried in order against each path with `re.search`, so the
    TSN/TDN fine-tuning recipe reads
    `{"(^|/)logits/kernel": 5, "(^|/)logits/bias": 10, "bias$": 2}`: the new head's
    weights 5x and bias 10x, every other bias 2x, the rest 1x.

    Args:
        paths: list of str. Variable paths.
        rules: dict {str: float}, or None.

    Returns:
        dict {path: float}; unmatched paths map to 1.0.
    """
    compiled = [
        (_compile(p, "lr_multipliers"), float(m)) for p, m in (rules or {}).items()
    ]
    for pattern, mult in compiled:
        if mult < 0:
            raise ValueError(
                "`lr_multipliers` values must be >= 0. "
                f"Received: {pattern.pattern!r}: {mult}"
            )
    out = {}
    for path in paths:
        out[path] = next((m for p, m in compiled if p.search(path)), 1.0)
    return out


def variable_multipliers(paths, *, lr_multipliers=None, layer_decay=None):
    """The product of the pattern rules and the layer decay, per path.

    Args:
        paths: list of str.
        lr_multipliers: dict {regex: float} or None (see
            `pattern_multipliers`).
        layer_decay: dict of `layer_decay_multipliers` keywords (`rate`,
            `num_layers`, `block_pattern`, `embed_pattern`), a float (the
            rate), or None.

    Returns:
        dict {path: float}.
    """
    out = pattern_multipliers(paths, lr_multipliers)
    if layer_decay is not None:
        if isinstance(layer_decay, (int, float)):
            layer_decay = {"rate": layer_decay}
        if not isinstance(layer_decay, dict):
            raise ValueError(
                "`layer_decay` must be a float rate or a dict with keys rate, "
                f"num_layers, block_pattern, embed_pattern. Received: {layer_decay!r}"
            )
        decay = layer_decay_multipliers(paths, **layer_decay)
        out = {p: out[p] * decay[p] for p in paths}
    return out


def decay_mask(paths, no_decay):
    """Which variables get weight decay: those matching no `no_decay` regex.

    Typical exclusions: `["bias$", "gamma$", "beta$", "pos_embed", "cls_token"]`
    (biases incl. the ViT q/v biases, Layer/BatchNorm gamma and beta, position
    embeddings). Paths are searched with `re.search`.

    Args:
        paths: list of str.
        no_decay: list of str regexes, or None.

    Returns:
        dict {path: bool}, True where weight decay applies.
    """
    if isinstance(no_decay, str):
        no_decay = [no_decay]
    compiled = [_compile(p, "no_decay") for p in (no_decay or [])]
    return {path: not any(p.search(path) for p in compiled) for path in paths}
