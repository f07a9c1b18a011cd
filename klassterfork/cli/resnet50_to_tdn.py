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

Exit status 0 when written; 2 for an input that is not such a state dict
or an output that cannot be written (one line on stderr, no traceback).
"""

import argparse
import pickle
import sys
import zipfile

import numpy as np

from klassterfork.files import atomic_path


def to_tdn(state):
    """The TDN-layout state dict of a torchvision ResNet-50 state dict.

    Args:
        state: dict of str -> numpy array, torchvision `resnet50` names.

    Returns:
        dict of str -> numpy array.

    Raises:
        ValueError: `state` lacks `conv1.weight` or a `layer1..4` tensor, or
            `conv1.weight` is not an RGB conv kernel (out, 3, kh, kw).
    """
    if "conv1.weight" not in state or not all(
        any(k.startswith(f"layer{s}.") for k in state) for s in range(1, 5)
    ):
        more = " ..." if len(state) > 6 else ""
        raise ValueError(
            "not a torchvision resnet50 state dict: it lacks conv1.weight or a "
            f"layer1..layer4 tensor. Received {len(state)} keys: "
            f"{sorted(state)[:6]}{more}."
        )
    shape = tuple(np.shape(state["conv1.weight"]))
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(
            "conv1.weight must be an RGB conv kernel (out, 3, kh, kw), whose "
            f"channel mean is the difference stem. Received shape: {shape}."
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


# What torch.load raises on a file that is no PyTorch checkpoint: torch's
# weights-only unpickler surfaces a damaged pickle as a KeyError /
# IndexError / EOFError, a damaged zip as a RuntimeError.
_READ_ERRORS = (OSError, RuntimeError, KeyError, IndexError, EOFError, TypeError,
                ImportError, pickle.UnpicklingError, zipfile.BadZipFile)
_ACCEPTED = ("Accepted: a torchvision resnet50 .pth state dict (conv1.weight, "
             "bn1.*, layer1..layer4.*; bare or under 'state_dict' / 'model' / "
             "'module').")


def _first_sentence(err):
    """`Type: first sentence`: torch's messages go on with advice (re-run with
    weights_only=False) that does not apply to a file that is no checkpoint."""
    text = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(err).__name__}: {text}".rstrip(": ")


def _convert(source):
    """(TDN state dict, None) or (None, the one-line refusal)."""
    # Imported after argument parsing: the weights package imports
    # TensorFlow, which --help should not wait for.
    from klassterfork.weights import torch_import

    try:
        state = torch_import.load_state_dict(source)
    except _READ_ERRORS as err:
        return None, (f"resnet50_to_tdn: {source}: cannot be read as a PyTorch file "
                      f"({_first_sentence(err)}). {_ACCEPTED}")
    except ValueError as err:  # a checkpoint, but of no state dict
        return None, f"resnet50_to_tdn: {str(err).rstrip('.')}. {_ACCEPTED}"
    try:
        return to_tdn(torch_import.normalize_keys(state)), None
    except ValueError as err:
        return None, f"resnet50_to_tdn: {source}: {err} {_ACCEPTED}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="resnet50_to_tdn", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="torchvision resnet50 .pth")
    parser.add_argument("out", help="TDN-layout .pth to write")
    args = parser.parse_args(argv)
    tdn, refusal = _convert(args.source)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    import torch

    try:
        with atomic_path(args.out) as tmp:
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v))
                       for k, v in tdn.items()}
            torch.save(tensors, tmp)
    except OSError as err:
        print(f"resnet50_to_tdn: {args.out}: cannot be written "
              f"({_first_sentence(err)}). Accepted: a writable file path.",
              file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(tdn)} tensors (TDN layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
