#!/usr/bin/env python
"""Shim: see klassterfork/cli/embed.py."""

import sys

from klassterfork.cli.embed import main

if __name__ == "__main__":
    sys.exit(main())
