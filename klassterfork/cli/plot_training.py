"""Plot a run's training curves (loss, top-1/top-5, LR) from its CSV log.

    python tools/plot_training.py RUN_DIR/log.csv [-o curves.png]
"""

import argparse
import sys
from pathlib import Path

from klassterfork.analysis.plot_training import plot_training


def main(argv=None):
    """Console entry point."""
    p = argparse.ArgumentParser(
        prog="kf-plot-training",
        description="Loss / top-1 / LR curves from a run's CSV log.")
    p.add_argument("csv", type=Path, help="the run's CSV log")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="PNG to write (default: <csv stem>_curves.png beside "
                   "the log)")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    out = args.output or args.csv.with_name(args.csv.stem + "_curves.png")
    try:
        panels = plot_training(args.csv, out, title=args.title)
    except (OSError, ValueError) as e:
        print(f"kf-plot-training: {e}", file=sys.stderr)
        return 2
    for name, cols in panels.items():
        print(f"{name}: {', '.join(cols) if cols else '(no column)'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
