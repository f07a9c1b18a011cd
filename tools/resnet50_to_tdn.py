#!/usr/bin/env python
"""Shim: see klassterfork/cli/resnet50_to_tdn.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from klassterfork.cli.resnet50_to_tdn import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
