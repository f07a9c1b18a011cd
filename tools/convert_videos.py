"""Converts videos to TFRecord shards; see `kf-convert --help`."""
from klassterfork.cli.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
