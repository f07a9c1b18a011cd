"""python runs/train.py CONFIG.hjson [-r] [-e] [--set key=value ...]

A bare config file name is looked up under runs/. See klassterfork/cli/train.py.
"""

import sys

from klassterfork.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
