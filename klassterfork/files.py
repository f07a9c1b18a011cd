"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Every output of the library that a user or a later run reads (manifests,
label maps, predictions, configs, plots) goes through here: write a temporary
sibling, then `os.replace` it onto the final name.

`tempfile.mkstemp` creates its file with mode 0600 whatever the umask, so a
renamed temporary would leave manifests and plots unreadable to other users
and to jobs on other machines; `honour_umask` gives every finished file the
mode `open()` would have given it (0644 under umask 022) before the rename.
Writers that take a file name (`model.save`, `savefig`, TFRecord writers)
use `atomic_path`.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path


def current_umask():
    """The process umask, read without changing it where Linux allows.

    `os.umask` can only be read by setting it, which races with other
    threads creating files; /proc/self/status states it directly.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(target):
    """Sets a file's mode to 0666 & ~umask, as `open()` would have created it.

    Args:
        target: int (an open file descriptor) or str / Path.
    """
    mode = 0o666 & ~current_umask()
    if isinstance(target, int):
        os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary name beside `path`; renames it onto `path` after.

    For writers that take a file name. The rename happens only when the block
    exits without an exception; the file then gets the umask's mode.

    Args:
        path: str or Path. Final file; its folder is created if missing.
        suffix: str or None. Ending of the temporary name (writers such as
            `keras.Model.save` check it). Defaults to `path`'s suffix.

    Yields:
        str, the temporary file name (an empty file exists there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
            honour_umask(f.fileno())
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
