"""`kf-convert`: videos -> sharded TFRecords (see `klassterfork.data.conversion.convert`).

    kf-convert --csv list.csv --out records/ --split train
    kf-convert --dataset synthetic --annotations data/synthetic --split train \
        --out records/ --short-side 128 --workers 4
    kf-convert --csv list.csv --out records/ --runner beam \
        --beam-options "--direct_num_workers=4 --direct_running_mode=multi_processing"

Every video not converted (failed, missing, a repeated id) is listed on
stderr with its reason and in `{split}.manifest.json`; `--strict` then exits 1.
"""

import argparse
import logging
import sys

from klassterfork import exit_codes, out_of_space
from klassterfork.data.conversion.sources import SOURCES


def _reader_args(pairs):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--reader-arg must be KEY=VALUE. Received: {pair!r}")
        out[key.replace("-", "_")] = int(value) if value.isdigit() else value
    return out


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kf-convert",
        description="Decode videos and write TFRecord shards, a manifest and "
        "labels.txt. Videos that fail to decode are listed in the manifest; "
        "the exit status is 0 unless --strict.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", metavar="FILE", help="`path,label` rows")
    src.add_argument("--dataset", metavar="NAME",
                     help=f"annotation reader: {', '.join(SOURCES.names())}")
    parser.add_argument("--annotations", metavar="PATH",
                        help="annotation file or folder (with --dataset); a local "
                             "path or a URL, as --out")
    parser.add_argument("--videos", metavar="DIR", default=None,
                        help="folder the annotation's video paths are under (a "
                             "local path or a URL)")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="class list for --csv: its order is the index order "
                             "(names, or index,name lines); without it, names are "
                             "sorted and the map is printed")
    parser.add_argument("--reader-arg", metavar="KEY=VALUE", action="append",
                        default=[], help="extra reader option (e.g. fold=2)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: a local path or a URL fsspec knows "
                             "(gs://bucket/records with gcsfs installed, s3://, ...)")
    parser.add_argument("--split", default="train")
    _add_output_options(parser)
    return parser


def _add_output_options(parser):
    """How frames are stored and how the conversion runs."""
    parser.add_argument("--short-side", type=int, default=128,
                        help="resize so the short side is this (0 = keep)")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample to this frame rate by timestamps")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: CPU count)")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="default: chosen from the estimated size")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when anything is not converted: a video that "
                             "fails to decode, a missing file, a repeated id")
    parser.add_argument("--keep-truncated", action="store_true",
                        help="store the frames of videos that end before their "
                             "declared length (listed as truncated in the manifest) "
                             "instead of failing them")
    parser.add_argument("--runner", choices=("local", "beam"), default="local",
                        help="local worker processes (default), or an Apache Beam "
                             "pipeline (pip install klassterfork[beam])")
    parser.add_argument("--beam-options", metavar="\"OPTS\"", default="",
                        help="Beam pipeline options, one string (e.g. "
                             "\"--runner=DataflowRunner --project=P ...\"); default: "
                             "DirectRunner, multi-processing, --workers processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--flow", choices=("farneback", "import"), default=None,
                        help="store optical flow: computed with Farneback (video "
                             "files and frame folders), or imported from a frame "
                             "folder's x_/y_ images (import)")
    parser.add_argument("--flow-bound", type=float, default=20.0,
                        help="flow clipping bound in pixels (default 20)")
    parser.add_argument("--label-remap", metavar="FILE", default=None,
                        help="label_remap.json from tools/class_overlap.py: drop the "
                             "removed classes' videos and re-index the rest")


def apply_label_remap(annotation, path):
    """Drops videos of removed classes and re-indexes labels (zero-shot filtering).

    Args:
        annotation: Annotation.
        path: `label_remap.json` with `old_to_new` (new index per old class,
            -1 = removed), as written by `tools/class_overlap.py`.

    Returns:
        (Annotation, number of videos dropped).
    """
    import dataclasses
    import json

    with open(path, encoding="utf-8") as f:
        old_to_new = json.load(f)["old_to_new"]
    if len(old_to_new) != len(annotation.label_names):
        raise ValueError(
            f"{path}: old_to_new has {len(old_to_new)} classes but the annotation has "
            f"{len(annotation.label_names)}"
        )
    names = [None] * (max(old_to_new) + 1)
    for old, new in enumerate(old_to_new):
        if new >= 0:
            names[new] = annotation.label_names[old]
    entries, dropped = [], 0
    for entry in annotation.entries:
        new = [old_to_new[label] for label in entry.labels]
        if entry.labels and all(n < 0 for n in new):
            dropped += 1
            continue
        entries.append(dataclasses.replace(entry, labels=tuple(n for n in new if n >= 0)))
    return dataclasses.replace(annotation, entries=entries, label_names=names,
                               flip_label_map=None), dropped


def join_option_values(argv, option="--beam-options"):
    """`OPTION VALUE` -> `OPTION=VALUE`, so that a VALUE starting with `--`
    (`--beam-options "--runner=DataflowRunner --project=P"`, the form --help
    shows) is read as the value instead of as kf-convert's own `--runner`.

    Abbreviations argparse accepts for `option` (`--beam-opt`) are joined too;
    nothing after a bare `--` is touched.

    Args:
        argv: list of str, the command line without the program name.
        option: str. The option whose value may start with `--`.

    Returns:
        list of str.
    """
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + list(argv[i:])
        if (len(arg) > 3 and option.startswith(arg) and "=" not in arg
                and i + 1 < len(argv)):
            out.append(f"{option}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def parse_args(argv=None):
    """The parsed command line (`argv`: None = sys.argv[1:]); the parser too."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    return parser, parser.parse_args(join_option_values(list(argv)))


def annotation_source(*, csv, dataset, annotations, labels, reader_args):
    """(reader name, annotation path, reader options) from the arguments.

    Raises:
        ValueError: an unknown --dataset, a missing --annotations, --labels
            without --csv, or a bad --reader-arg.
    """
    options = _reader_args(reader_args)
    if csv:
        name, annotations = "csv", csv
        if labels:
            options["label_map"] = labels
    else:
        if dataset not in SOURCES:
            raise ValueError(f"--dataset: {SOURCES.unknown_message(dataset)}")
        if not annotations:
            raise ValueError("--dataset needs --annotations PATH")
        if labels:
            raise ValueError("--labels is for --csv; use --reader-arg")
        name = dataset
    bad = SOURCES.check_args(name, options)
    if bad:
        raise ValueError(f"--reader-arg {bad[0]}: {bad[1]}")
    return name, annotations, options


def read_annotation(name, annotations, options, *, videos, split, label_remap):
    """The `Annotation` of reader `name`, after `--label-remap` when given."""
    annotation = SOURCES[name](
        annotations=annotations, videos=videos, split=split, **options
    )
    if label_remap:
        annotation, dropped = apply_label_remap(annotation, label_remap)
        print(f"{label_remap}: dropped {dropped} videos of removed classes; "
              f"{len(annotation.label_names)} classes remain", file=sys.stderr)
    if annotation.split and annotation.split != split:
        print(f"--split {split}: written as {annotation.split!r} (the one spelling "
              "recipes read)", file=sys.stderr)
    if annotation.classes_from == "sorted names":
        print(f"classes: {len(annotation.label_names)} names sorted (--labels FILE "
              "sets the order): " + ", ".join(
                  f"{i}={n}" for i, n in enumerate(annotation.label_names)))
    return annotation


def print_summary(manifest, problems, *, split, out):
    """The counts on stdout; what was not converted or kept truncated on stderr."""
    counts = manifest["counts"]
    print(
        f"{split}: wrote {counts['written']} of {counts['videos']} videos "
        f"({counts['frames']} frames) in {len(manifest['shards'])} shards to "
        f"{out}"
    )
    if problems:
        print(f"warning: {len(problems)} not converted ({counts['failed']} failed, "
              f"{counts['missing']} missing, {counts['skipped']} skipped):",
              file=sys.stderr)
    for p in problems:
        print(f"  {p['path']}: {p['reason']}", file=sys.stderr)
    if manifest["truncated"]:
        print(f"warning: {counts['truncated']} kept truncated (--keep-truncated):",
              file=sys.stderr)
    for p in manifest["truncated"]:
        print(f"  {p['path']}: {p['reason']}", file=sys.stderr)


def main(argv=None):
    """Runs the converter; returns the exit status (0, 1 failures with
    --strict, 2 usage errors)."""
    parser, args = parse_args(argv)
    from klassterfork.data.conversion import convert as convert_lib

    logging.basicConfig(format="%(levelname)s: %(message)s")
    try:
        name, annotations, options = annotation_source(
            csv=args.csv, dataset=args.dataset, annotations=args.annotations,
            labels=args.labels, reader_args=args.reader_arg)
        annotation = read_annotation(name, annotations, options, videos=args.videos,
                                     split=args.split, label_remap=args.label_remap)
    except (ValueError, OSError, KeyError) as e:
        parser.error(str(e))
    args.split = annotation.split or args.split
    kwargs = dict(
        split=args.split,
        short_side=args.short_side or None,
        fps=args.fps,
        max_frames=args.max_frames,
        workers=args.workers,
        num_shards=args.num_shards,
        jpeg_quality=args.jpeg_quality,
        strict=args.strict,
        flow=args.flow,
        flow_bound=args.flow_bound,
        keep_truncated=args.keep_truncated,
        source={"dataset": name, "annotations": annotations,
                "videos": args.videos, "options": options},
    )
    try:
        if args.runner == "beam":
            from klassterfork.data.conversion import beam_convert

            manifest = beam_convert.run(annotation, args.out,
                                        beam_options=args.beam_options, **kwargs)
        else:
            manifest = convert_lib.convert(annotation, args.out,
                                           progress=not args.quiet, **kwargs)
    except convert_lib.ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, ImportError) as e:
        parser.error(str(e))
    except OSError as e:  # a full disk or quota: one paragraph, exit 75
        if not out_of_space.is_out_of_space(e):
            raise
        text = out_of_space.report(e, resume_hint="run the same command again")
        print(f"kf-convert: {text}", file=sys.stderr)
        return exit_codes.OUT_OF_SPACE
    print_summary(manifest, convert_lib.not_converted(manifest), split=args.split,
                  out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
