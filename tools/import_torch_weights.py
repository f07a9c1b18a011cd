#!/usr/bin/env python
"""Shim: see klassterfork/cli/import_torch.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from klassterfork.cli.import_torch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
