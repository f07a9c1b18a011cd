"""Shim: see klassterfork/cli/export.py (console script kf-export)."""

import sys

from klassterfork.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
