"""`kf-synthetic`: write the bundled synthetic action dataset."""

import argparse
import time

from klassterfork.data.conversion import synthetic


def main(argv=None):
    """Parses `argv` (default: sys.argv[1:]) and writes the dataset."""
    parser = argparse.ArgumentParser(
        prog="kf-synthetic",
        description="Write the synthetic motion dataset (real video files, "
        "SSv2-style annotations, flip label map).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=480)
    parser.add_argument("--num-val", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--codec", choices=sorted(synthetic.CODECS), default="h264")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: all CPUs; 1 = in-process)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.height % 2 or args.width % 2:
        parser.error(f"--height and --width must be even (yuv420p). Received: "
                     f"{args.height}x{args.width}")
    start = time.perf_counter()
    splits = synthetic.generate(
        args.out, num_train=args.num_train, num_val=args.num_val,
        seed=args.seed, fps=args.fps, height=args.height, width=args.width,
        min_seconds=args.min_seconds, max_seconds=args.max_seconds,
        codec=args.codec, workers=args.workers, progress=not args.quiet,
    )
    counts = ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    print(f"wrote {counts} videos ({len(synthetic.CLASSES)} classes) to "
          f"{args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
