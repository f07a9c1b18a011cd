"""torchvision ImageNet ResNet-50 -> the TDN layout, for `init_weights`.

The TDN reference (MCG-NJU/TDN, ops/tdn_net.py) starts its TDN ResNet-50
from two torchvision ImageNet ResNet-50s: `conv1` / `bn1` / `layer1..4`
become `conv1` / `bn1` / `layer1_bak..layer4_bak`, the second net's `conv1`
and `layer1` become `conv1_temp` and `resnext_layer1`, and the 12-channel
difference stem `conv1_5.0` is `conv1`'s kernel averaged over its 3 input
channels and repeated 12 times. The reference's backbone (Cadene's
`fbresnet50`) has a bias on every conv, which the torchvision file lacks;
its `load_state_dict(strict=False)` leaves them at PyTorch's random default.
Here they are written as zeros, so the backbone computes exactly the
ImageNet network's function. This script writes that state dict so that
`init_weights` (torch_import family "tdn") loads it; the modules TDN adds
(`conv1_5.1`, the `mse` and `shift` parts of each block, `new_fc`) are not
in it and stay initialized, as in the reference.

    python tools/resnet50_to_tdn.py resnet50-0676ba61.pth \
        resnet50-0676ba61_tdn.pth
"""

import argparse
import pickle
import sys

import numpy as np

from klassterfork.files import atomic_path
from klassterfork.weights import torch_import


def to_tdn(state):
    """The TDN-layout state dict of a torchvision ResNet-50 state dict.

    Args:
        state: dict of str -> numpy array, torchvision `resnet50` names.

    Returns:
        dict of str -> numpy array.

    Raises:
        ValueError: `state` lacks `conv1.weight` or a `layer1..4` tensor.
    """
    if "conv1.weight" not in state or not all(
        any(k.startswith(f"layer{s}.") for k in state) for s in range(1, 5)
    ):
        raise ValueError(
            "expected a torchvision resnet50 state dict (conv1.weight, "
            f"layer1..layer4). Received keys: {sorted(state)[:6]} ..."
        )
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in ("conv1", "bn1"):
            out[key] = value
            if head == "conv1":
                out[f"conv1_temp.{rest}"] = value
        elif head in ("layer1", "layer2", "layer3", "layer4"):
            out[f"{head}_bak.{rest}"] = value
            if head == "layer1":
                out[f"resnext_layer1.{rest}"] = value
        # fc (the 1000-class head) is dropped: TDN's head is new_fc.
    for key in [k for k, v in out.items() if k.endswith(".weight") and v.ndim == 4]:
        bias = key[: -len("weight")] + "bias"
        out.setdefault(bias, np.zeros(out[key].shape[0], np.float32))
    kernel = state["conv1.weight"]
    out["conv1_5.0.weight"] = np.repeat(kernel.mean(axis=1, keepdims=True), 12, axis=1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="resnet50_to_tdn", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="torchvision resnet50 .pth")
    parser.add_argument("out", help="TDN-layout .pth to write")
    args = parser.parse_args(argv)
    try:
        state = torch_import.normalize_keys(torch_import.load_state_dict(args.source))
        tdn = to_tdn(state)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        print(f"resnet50_to_tdn: {args.source}: expected a torchvision resnet50 "
              f".pth state dict; {str(err).splitlines()[0]}",
              file=sys.stderr)
        return 2
    import torch

    with atomic_path(args.out) as tmp:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tdn.items()}
        torch.save(tensors, tmp)
    print(f"wrote {args.out}: {len(tdn)} tensors (TDN layout)")
    return 0
