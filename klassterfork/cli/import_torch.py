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
"""

import argparse
import json
import sys
from pathlib import Path

# The layout of each model's classifier key (`fc` / `head`), read before the
# model is built; the import itself infers the layout from the built model.
FAMILY_OF_MODEL = {
    "R2Plus1D18": "resnet3d", "R3D18": "resnet3d", "MC3_18": "resnet3d",
    "R2Plus1D": "resnet3d", "TSN": "resnet2d", "VideoViT": "vit",
}


def _parse_arg(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value. Received: {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None):
    """Parses `argv` (default: sys.argv[1:]), imports, saves; returns 0/1."""
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
    args = parser.parse_args(argv)
    if not args.output.endswith(".keras"):
        parser.error(f"--output must end with .keras. Received: {args.output}")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: no such file: {args.checkpoint}")

    from klassterfork import models
    from klassterfork.weights import torch_import

    family = FAMILY_OF_MODEL[args.model]
    try:
        state_dict = torch_import.load_state_dict(args.checkpoint)
        in_checkpoint = torch_import.checkpoint_num_classes(state_dict, family)
        num_classes = args.num_classes or in_checkpoint
        model = models.build(args.model, num_classes=num_classes, **dict(args.arg))
        report = torch_import.import_state_dict(
            model, state_dict,
            load_head=num_classes == in_checkpoint, source=args.checkpoint,
        )
    except (ImportError, KeyError, TypeError, ValueError) as err:
        print(f"kf-import-torch: {err}", file=sys.stderr)
        return 1
    from klassterfork.files import atomic_path

    with atomic_path(args.output) as tmp:
        model.save(tmp)
    print(f"{args.output}: {len(report['loaded'])} layers from {args.checkpoint}"
          + (f"; head left initialised ({', '.join(report['skipped'])}: "
             f"{num_classes} classes, checkpoint {in_checkpoint})"
             if report["skipped"] else ""))
    if report["unused"]:
        print(f"unused checkpoint keys ({len(report['unused'])}): "
              f"{', '.join(report['unused'][:10])}"
              + (" ..." if len(report["unused"]) > 10 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
