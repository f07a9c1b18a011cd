#!/usr/bin/env python
"""Shim: see klassterfork/cli/class_overlap.py."""

import sys

from klassterfork.cli.class_overlap import main

if __name__ == "__main__":
    sys.exit(main())
