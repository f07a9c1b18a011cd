"""`tools/class_overlap.py`: drop training classes too close to target classes.

    python tools/class_overlap.py --wordvec glove.6B.50d.txt --format glove \\
        --train kinetics700=label_map_k700.txt \\
        --target ucf101=classInd.txt --target hmdb51=label_map.txt \\
        --tau 0.05 --sweep 0.01 0.05 0.1 --out k700_wo_ucf_hmdb/

A training class is kept iff its cosine distance (1 - cos of the class-name
embeddings) to every target class is >= tau (Brattoli et al., CVPR 2020; the
authors kept 664 of the 700 Kinetics classes with 300-d word2vec). Removed
classes are printed with their nearest target class and distance. With
`--out`, writes `labels.txt` (kept classes, `index,name`, re-indexed in their
old order) and `label_remap.json` whose `old_to_new[i]` is the new index of
old class i or -1 (its samples are dropped). Without `--wordvec`, embeddings
saved by `tools/embed_class_names.py` are read from `--embeddings DIR`, and
each `--train` / `--target` is just the dataset name.

Kinetics-700 vs UCF101 + HMDB51 with the shared 50-d GloVe subset
(`glove.6B.50d.classnames.txt`) and the shipped override tables keeps
700 / 675 / 666 / 637 classes at tau = 0 / 0.01 / 0.05 / 0.1 (664 for
0.052 <= tau <= 0.057). The 25 classes at distance 0 have the same words as a
target class (e.g. "hammer throw" / HammerThrow). Not comparable one-to-one
with the authors' 664 of 700: they used 300-d word2vec and lemmatised verbs
with WordNet, which we do not, so inflected pairs such as "brushing hair" /
brush_hair (distance 0.104 here) are not merged.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

from klassterfork.evaluation import class_names, wordvec, zero_shot


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="class_overlap", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wordvec", help="word-vector file")
    source.add_argument(
        "--embeddings",
        help="folder of saved {dataset}_class_embeddings.npy / _class_names.txt",
    )
    parser.add_argument(
        "--format",
        choices=sorted(wordvec.FORMATS),
        help="word-vector format (with --wordvec)",
    )
    parser.add_argument("--vocab", help="vocabulary file for --format npy")
    parser.add_argument(
        "--no-overrides",
        action="store_true",
        help="do not use the shipped override tables",
    )
    parser.add_argument(
        "--train", required=True, help="NAME=CLASSES (or NAME with --embeddings)"
    )
    parser.add_argument(
        "--target",
        required=True,
        action="append",
        help="NAME=CLASSES (or NAME); repeat per dataset",
    )
    parser.add_argument(
        "--tau", type=float, required=True, help="keep a class iff distance >= tau"
    )
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="+",
        default=[],
        help="also print the kept count for these taus",
    )
    parser.add_argument("--out", help="folder for labels.txt and label_remap.json")
    args = parser.parse_args(argv)
    if args.wordvec and not args.format:
        parser.error("--format is required with --wordvec")
    return args


def _split_spec(spec, with_file):
    name, sep, path = spec.partition("=")
    if with_file and not (sep and name and path):
        raise ValueError(f"expected NAME=CLASSES_FILE. Received: {spec!r}")
    if not with_file and sep:
        raise ValueError(
            f"with --embeddings give only the dataset name. Received: {spec!r}"
        )
    return name, path


def load_sets(args):
    """(name, class names, (C, D) matrix) for the train set and each target."""
    specs = [_split_spec(s, bool(args.wordvec)) for s in [args.train, *args.target]]
    if not args.wordvec:
        return [
            (name, *wordvec.load_class_embeddings(args.embeddings, name))
            for name, _ in specs
        ]
    tables = {
        name: {} if args.no_overrides else wordvec.default_overrides(name)
        for name, _ in specs
    }
    lists = [(n, class_names.read_class_list(p, n)) for n, p in specs]
    keep = set().union(*(wordvec.words_needed(c, tables[n]) for n, c in lists))
    wordvecs = wordvec.load_word_vectors(
        args.wordvec, args.format, vocab=args.vocab, keep=keep
    )
    sets = []
    for name, names in lists:
        emb = wordvec.embed_class_names(names, wordvecs, tables[name])
        sets.append((name, emb.names, emb.matrix))
    return sets


def overlap_report(train_names, target_labels, keep, nearest, distance):
    """Removed classes as dicts, nearest first (smallest distance first)."""
    removed = [
        {
            "index": int(i),
            "name": train_names[i],
            "nearest": target_labels[nearest[i]],
            "distance": float(distance[i]),
        }
        for i in np.nonzero(~keep)[0]
    ]
    return sorted(removed, key=lambda r: (r["distance"], r["index"]))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sets = load_sets(args)
    except (ImportError, OSError, ValueError) as err:
        print(f"class_overlap: error: {err}", file=sys.stderr)
        return 1
    (train, train_names, train_matrix), targets = sets[0], sets[1:]
    target_labels = [f"{name}: {n}" for name, names, _ in targets for n in names]
    target_matrix = np.concatenate([m for _, _, m in targets])
    keep, nearest, distance = zero_shot.filter_overlapping_classes(
        train_matrix, target_matrix, args.tau
    )
    removed = overlap_report(train_names, target_labels, keep, nearest, distance)
    target_desc = " + ".join(f"{n} ({len(c)})" for n, c, _ in targets)
    print(
        f"{train}: {len(train_names)} classes vs {target_desc}; "
        f"tau={args.tau:g}: kept {int(keep.sum())}, removed {len(removed)}"
    )
    for r in removed:
        print(
            f"  removed {r['index']:4d} {r['name']!r:45s} nearest "
            f"{r['nearest']!r} distance {r['distance']:.4f}"
        )
    for tau in args.sweep:
        kept = int((distance >= tau).sum())
        print(f"tau={tau:g}: kept {kept} of {len(train_names)}")
    if args.out:
        out = _write(
            args, train, train_names, keep, removed, [n for n, _, _ in targets]
        )
        print(f"wrote {out / 'labels.txt'} and {out / 'label_remap.json'}")
    return 0


def _write(args, train, train_names, keep, removed, target_names):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old_to_new = zero_shot.remap_labels(keep)
    class_names.write_labels_txt(
        out / "labels.txt", [n for n, k in zip(train_names, keep) if k]
    )
    remap = {
        "train": train,
        "targets": target_names,
        "tau": args.tau,
        "num_classes": len(train_names),
        "num_kept": int(keep.sum()),
        "old_to_new": old_to_new.tolist(),
        "removed": removed,
    }
    class_names.atomic_write_text(
        out / "label_remap.json", json.dumps(remap, indent=1) + "\n"
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
