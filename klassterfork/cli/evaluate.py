"""Evaluate per-video score files: metrics, confusion matrix, per-class CSV.

    python tools/evaluate.py PRED [PRED2] [--weights 1 1.5] [--out DIR]
        [--normalize] [--groups contrastive_groups_list.txt]
        [--class-names labels.txt] [--submission submission.csv]

PRED is a scores file written by `write_predictions` (`<stem>`, `.npz` or
`.json`). With two files (e.g. RGB and flow streams), rows are matched by
video id, each stream is evaluated, and the weighted late fusion
(`aggregate.fuse_streams`) is evaluated too; the pictures, the CSV and the
fused scores file describe the fusion. Writes into DIR (default: the folder
of the first file):

    metrics.json          headline metrics (per stream and fusion)
    confusion_matrix.png  (row-normalized with --normalize)
    per_class.csv         precision / recall / support per class
    fusion_predictions.*  the fused scores file (two inputs only)

Unlabelled (test) files only yield `--submission` (SSv2 `id;c1;...;c5`).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from klassterfork.evaluation import aggregate, metrics
from klassterfork.evaluation.predictions import (
    atomic_write,
    read_class_names,
    read_predictions,
    write_predictions,
)
from klassterfork.evaluation.submission import write_submission


def build_parser():
    p = argparse.ArgumentParser(
        prog="kf-evaluate",
        description="Metrics, confusion matrix and per-class CSV from one "
        "scores file, or from the late fusion of two.",
    )
    p.add_argument("predictions", nargs="+",
                   help="one or two scores files (.npz/.json/stem)")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="fusion weights, one per file (default: equal; TSN "
                   "uses 1 1.5 for rgb flow)")
    p.add_argument("--stream-names", nargs="+", default=None,
                   help="names of the streams in the report (default: "
                   "rgb flow for two files, else the file stems)")
    p.add_argument("--softmax", action="store_true",
                   help="softmax each stream's scores before fusing "
                   "(use when the files hold logits)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: folder of the first file)")
    p.add_argument("--normalize", action="store_true",
                   help="row-normalize the confusion matrix picture")
    p.add_argument("--class-names", type=Path, default=None,
                   help="class list (txt, one per line, or SSv2 labels json) "
                   "overriding the names stored in the scores file")
    p.add_argument("--groups", type=Path, default=None,
                   help="SSv2 contrastive groups file: add the group score")
    p.add_argument("--submission", type=Path, default=None,
                   help="also write an SSv2 submission file (id;c1;...;c5)")
    return p


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _load_streams(paths, names):
    streams = [read_predictions(p) for p in paths]
    first = streams[0]
    for path, s in zip(paths[1:], streams[1:]):
        if len(s["class_names"]) != len(first["class_names"]):
            raise ValueError(
                f"{path}: {len(s['class_names'])} classes, but {paths[0]} "
                f"has {len(first['class_names'])}"
            )
        perm = aggregate.align_by_id(first["ids"], s["ids"])
        s["scores"], s["ids"] = s["scores"][perm], first["ids"]
        s["labels"] = s["labels"][perm]
        if first["labelled"] and s["labelled"] and not np.array_equal(
            np.sort(s["labels"], axis=1), np.sort(first["labels"], axis=1)
        ):
            raise ValueError(f"{path}: labels differ from {paths[0]}")
    return dict(zip(names, streams))


def stream_names(paths, names):
    """The report's stream names: `names`, or rgb/flow for two files, or the
    file stem. Exits (SystemExit) on three files, or on names that are not
    one distinct name per file (a repeated name would drop a stream)."""
    if len(paths) > 2:
        raise SystemExit("kf-evaluate: give one or two scores files. "
                         f"Received: {len(paths)}")
    names = names or (["rgb", "flow"] if len(paths) == 2 else [Path(paths[0]).stem])
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise SystemExit("kf-evaluate: --stream-names needs one distinct name "
                         f"per file. Received: {names}")
    return names


def class_names_for(first, path):
    """`first`'s class names, or those of `path` when given; they must match
    the number of score columns."""
    class_names = read_class_names(path) if path else first["class_names"]
    if len(class_names) != first["scores"].shape[1]:
        raise SystemExit(
            f"kf-evaluate: {path} has {len(class_names)} classes "
            f"but the scores have {first['scores'].shape[1]}")
    return class_names


def fuse(streams, *, weights, softmax, out, class_names):
    """The scores to evaluate: the one stream's, or the weighted late fusion
    of two (also written to `out/fusion_predictions`).

    Returns:
        (weights or None, float array [N, C]).
    """
    first = next(iter(streams.values()))
    if len(streams) != 2:
        return None, first["scores"]
    if weights is not None and len(weights) != 2:
        raise SystemExit("kf-evaluate: --weights needs one weight per "
                         f"file. Received: {weights}")
    scores_list = [aggregate.softmax(s["scores"]) if softmax else s["scores"]
                   for s in streams.values()]
    final = aggregate.fuse_streams(scores_list, weights)
    write_predictions(out / "fusion_predictions", first["ids"], final,
                      first["labels"], class_names)
    return weights, final


def add_metrics(report, streams, final, labels, *, weights, softmax, groups,
                class_names):
    """Fills `report` with the metrics: per stream and fusion for two
    streams, and the contrastive group score with `groups`."""
    if len(streams) == 2:
        report["streams"] = {n: metrics.summary(s["scores"], labels)
                             for n, s in streams.items()}
        report["fusion"] = {"weights": weights or [1.0, 1.0], "softmax": softmax}
    report["metrics"] = metrics.summary(final, labels)
    if groups:
        from klassterfork.analysis.contrastive import (
            contrastive_group_score,
            parse_groups,
        )
        report["contrastive_groups"] = contrastive_group_score(
            final, labels, parse_groups(groups, class_names))


def write_outputs(out, report, final, labels, class_names, *, normalize):
    """confusion_matrix.png, per_class.csv and metrics.json in `out`."""
    from klassterfork.analysis import confusion
    top1 = metrics.top_k_indices(final, 1)[:, 0]
    cm = metrics.confusion_matrix(labels, top1, len(class_names))
    confusion.plot_confusion_matrix(cm, class_names, out / "confusion_matrix.png",
                                    normalize=normalize)
    confusion.write_per_class_csv(
        out / "per_class.csv", class_names,
        metrics.per_class_precision_recall(final, labels))
    with atomic_write(out / "metrics.json") as f:
        json.dump(_jsonable(report), f, indent=1)
        f.write("\n")


def print_table(report, last_row, out):
    """One line per stream (then `last_row`: fusion or the single stream)."""
    rows = list(report.get("streams", {}).items())
    rows.append((last_row, report["metrics"]))
    print(f"{'':12s} {'top1':>7s} {'top5':>7s} {'mean_cls':>8s} {'mAP':>7s}")
    for n, m in rows:
        print(f"{n:12s} {m['top1']:7.4f} {m['top5']:7.4f} "
              f"{m['mean_class_accuracy']:8.4f} {m['mAP']:7.4f}")
    if "contrastive_groups" in report:
        g = report["contrastive_groups"]
        print(f"contrastive groups: accuracy {g['accuracy']:.4f}, majority "
              f"baseline {g['majority_baseline']:.4f}")
    print(f"wrote {out / 'metrics.json'}, confusion_matrix.png, "
          "per_class.csv")


def run(args):
    """Runs the evaluation for parsed `args`; returns the metrics dict."""
    paths = args.predictions
    names = stream_names(paths, args.stream_names)
    streams = _load_streams(paths, names)
    first = streams[names[0]]
    class_names = class_names_for(first, args.class_names)
    out = args.out or Path(paths[0]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    weights, final = fuse(streams, weights=args.weights, softmax=args.softmax,
                          out=out, class_names=class_names)

    report = {"inputs": [str(p) for p in paths], "class_names_count":
              len(class_names)}
    if args.submission:
        write_submission(args.submission, first["ids"], final)
        report["submission"] = str(args.submission)
        print(f"submission: {args.submission} ({len(first['ids'])} videos)")
    if not first["labelled"]:
        print("kf-evaluate: the scores file has unlabelled videos; no "
              "metrics (use --submission for a test split)")
        return report

    labels = first["labels"]
    add_metrics(report, streams, final, labels, weights=weights,
                softmax=args.softmax, groups=args.groups, class_names=class_names)
    write_outputs(out, report, final, labels, class_names, normalize=args.normalize)
    print_table(report, "fusion" if len(paths) == 2 else names[0], out)
    return report


def main(argv=None):
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"kf-evaluate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
