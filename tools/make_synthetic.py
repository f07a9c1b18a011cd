"""Writes the synthetic action dataset; see `kf-synthetic --help`."""
from klassterfork.cli.synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
