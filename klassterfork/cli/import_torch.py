"""`kf-import-torch --model NAME --checkpoint FILE.pth --output FILE.keras`.

Builds a registered model, copies a PyTorch state dict into it
(`klassterfork.weights.torch_import`: torchvision video ResNets and
ResNet-50, TSM and TDN checkpoints, VideoMAE ViTs) and saves it as `.keras`
(written to a temporary name, then renamed). The checkpoint layout follows
the built model (`torch_import.infer_family`): a TDN checkpoint needs
`--model TSN --arg temporal='"tdn"' --arg num_segments=8`.

`--num-classes N` sets the head; without it the checkpoint's classifier size
is used. When N differs from the checkpoint's, the backbone is imported and
the head keeps its fresh initialisation (fine-tuning on new classes).
`--arg key=value` passes other builder arguments (value read as JSON when it
parses, else as a string), e.g. `--arg num_segments=8 --arg temporal='"tsm"'`
or `--arg variant=S --arg num_frames=16`.

Beside the `.keras` it writes `config.resolved.json` holding the evaluation
transform (`datasets.val`: clip_len, crop_size, standardize, mean, std), so
`kf-predict --model FILE.keras` needs no `--config` (`inference.find_config`
looks in the model's folder). `--standardize`, `--mean`, `--std` default
to the family's reference values (torchvision video ResNets: Kinetics
mean/std; ResNet-50/TSN and VideoMAE: ImageNet), `--clip-len` /
`--crop-size` to the built model's input (T, H). The folder must hold no
other run's config: give each imported model its own folder.
"""

import argparse
import json
import os
import sys
from pathlib import Path

# The layout of each model's classifier key (`fc` / `head`), read before the
# model is built; the import itself infers the layout from the built model.
FAMILY_OF_MODEL = {
    "R2Plus1D18": "resnet3d",
    "R3D18": "resnet3d",
    "MC3_18": "resnet3d",
    "R2Plus1D": "resnet3d",
    "TSN": "resnet2d",
    "VideoViT": "vit",
}
# Each layout's reference standardization (the checkpoints were trained with
# it): torchvision video models on Kinetics, ResNet-50 and VideoMAE ImageNet.
REFERENCE_NORM = {"resnet3d": "KINETICS", "resnet2d": "IMAGENET", "vit": "IMAGENET"}
SIDECAR = "config.resolved.json"


def _parse_arg(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value. Received: {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="kf-import-torch",
        description="Import a PyTorch state dict into a klassterfork model (.keras).",
    )
    parser.add_argument("--model", required=True, choices=sorted(FAMILY_OF_MODEL))
    parser.add_argument("--checkpoint", required=True, help="PyTorch .pth / .pt file")
    parser.add_argument("--output", required=True, help="output .keras file")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="head size (default: the checkpoint's classifier)")
    parser.add_argument("--arg", type=_parse_arg, action="append", default=[],
                        metavar="KEY=VALUE", help="other builder arguments")
    _add_eval_args(parser)
    args = parser.parse_args(argv)
    if not args.output.endswith(".keras"):
        parser.error(f"--output must end with .keras. Received: {args.output}")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: no such file: {args.checkpoint}")
    return args


def main(argv=None):
    """Parses `argv` (default: sys.argv[1:]), imports, saves; returns 0/1."""
    args = parse_args(argv)
    from klassterfork import models
    from klassterfork.weights import torch_import

    family = FAMILY_OF_MODEL[args.model]
    try:
        state_dict = torch_import.load_state_dict(args.checkpoint)
        in_checkpoint = torch_import.checkpoint_num_classes(state_dict, family)
        num_classes = args.num_classes or in_checkpoint
        model = models.build(args.model, num_classes=num_classes, **dict(args.arg))
        report = torch_import.import_state_dict(
            model, state_dict, load_head=num_classes == in_checkpoint,
            source=args.checkpoint)
        sidecar = _sidecar(args, family, model)
    except (ImportError, KeyError, TypeError, ValueError) as err:
        print(f"kf-import-torch: {err}", file=sys.stderr)
        return 1
    from klassterfork.files import atomic_path, write_json_atomic

    with atomic_path(args.output) as tmp:
        model.save(tmp)
    write_json_atomic(sidecar_path(args.output), sidecar)
    _print_report(args, report, num_classes, in_checkpoint)
    return 0


def _print_report(args, report, num_classes, in_checkpoint):
    head = (f"; head left initialised ({', '.join(report['skipped'])}: "
            f"{num_classes} classes, checkpoint {in_checkpoint})" if report["skipped"] else "")
    print(f"{args.output}: {len(report['loaded'])} layers from {args.checkpoint}{head}")
    if report["unused"]:
        more = " ..." if len(report["unused"]) > 10 else ""
        print(f"unused checkpoint keys ({len(report['unused'])}): "
              f"{', '.join(report['unused'][:10])}{more}")


def _add_eval_args(parser):
    """The flags of the evaluation transform written beside the model."""
    group = parser.add_argument_group(
        f"evaluation transform (written to {SIDECAR} beside --output)"
    )
    group.add_argument(
        "--standardize",
        default=None,
        help="transforms.standardize "
        "mode (default: mean_std with the family's mean/std)",
    )
    group.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        help="per-channel RGB mean in [0, 1] (default: the family's)",
    )
    group.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        help="per-channel RGB std in [0, 1] (default: the family's)",
    )
    group.add_argument(
        "--clip-len",
        type=int,
        default=None,
        help="frames per view (default: the model's input T)",
    )
    group.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="view height = width (default: the model's input H)",
    )


def sidecar_path(output):
    """Where `kf-predict` finds the config of an imported model."""
    return str(Path(output).resolve().parent / SIDECAR)


def _sidecar(args, family, model):
    """The `config.resolved.json` of an imported model (a one-stage config).

    Raises:
        ValueError: a flag the model or `transforms.standardize` rejects, or a
            folder whose config `kf-predict` would read instead of this one.
    """
    import numpy as np

    from klassterfork.data import transforms

    mode = args.standardize or "mean_std"
    mean, std = args.mean, args.std
    if mode == "mean_std":
        ref = REFERENCE_NORM[family]
        mean = mean or list(getattr(transforms, f"{ref}_MEAN"))
        std = std or list(getattr(transforms, f"{ref}_STD"))
    transforms.standardize(np.zeros((1, 1, 1, 3), np.uint8), mode, mean=mean, std=std)
    shape = tuple(model.inputs[0].shape)  # (B, T, H, W, C)
    view = {
        "clip_len": args.clip_len or shape[1],
        "crop_size": args.crop_size or shape[2],
    }
    for key, have in (("clip_len", shape[1]), ("crop_size", shape[2])):
        if not isinstance(view[key], int) or (have is not None and view[key] != have):
            raise ValueError(
                f"--{key.replace('_', '-')} must equal the model's input "
                f"{shape[1:]} (T, H, W, C). Received: {view[key]}"
            )
    block = {**view, "standardize": mode}
    if mode == "mean_std":
        block.update(mean=list(mean), std=list(std))
    config = {
        "meta": {
            "imported_from": str(args.checkpoint),
            "model": args.model,
            "arg": dict(args.arg),
        },
        "datasets": {"val": block},
    }
    _check_folder(args.output, config)
    return config


def _check_folder(output, config):
    """Raises ValueError when another config would shadow or be replaced."""
    from klassterfork.evaluation.inference import find_config

    here = sidecar_path(output)
    found, _ = find_config(output)
    if found is not None and os.path.abspath(found) != here:
        raise ValueError(
            f"{found} would be read by kf-predict instead of {here}: "
            "write the model to a folder of its own (--output)"
        )
    if os.path.isfile(here):
        with open(here, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("datasets") != config["datasets"]:
            raise ValueError(
                f"{here} holds another model's config; write the model "
                "to a folder of its own (--output)"
            )


if __name__ == "__main__":
    sys.exit(main())
