"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Every output of the library that a user or a later run reads (manifests,
label maps, predictions, configs, plots) goes through here: write a temporary
sibling, then `os.replace` it onto the final name.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Opens a temporary file beside `path` and renames it onto `path`.

    The rename happens only when the block exits without an exception.

    Args:
        path: str or Path. Final file; its folder is created if missing.
        mode: str. "w" (text, UTF-8) or "wb". Defaults to "w".

    Yields:
        The open temporary file object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def write_bytes_atomic(path, data):
    """Writes `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_json_atomic(path, data, indent=2):
    """Writes `data` as JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
