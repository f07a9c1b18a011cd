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

One filesystem layer: every path the training side reads or writes (shards,
manifests, bad_records, checkpoints, logs, exports) goes through the
functions below. A local path uses `os` (modes, umask, errno as before); a
path with a scheme (`gs://`, `s3://`, TF's in-memory `ram://` that the tests
use) goes through `tf.io.gfile`, imported only then: atomic writes write a
temporary name and `gfile.rename(..., overwrite=True)` it. The TF-free
converter uses fsspec instead (data/conversion/fs.py).

A write that finds its filesystem full raises `out_of_space.OutOfSpaceError`
naming the path (Python's own error names no file).
"""

import contextlib
import errno
import glob as _glob
import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from klassterfork.out_of_space import ERRNOS, OutOfSpaceError


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
    if is_remote(path):
        with _remote_atomic_path(str(path), suffix) as tmp:
            yield tmp
        return
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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_full_disk(err, path)
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
    if is_remote(path):
        with _remote_atomic_write(str(path), mode) as f:
            yield f
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            honour_umask(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_full_disk(err, path)
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


def _name_full_disk(err, path, needed=None):
    """Raises `OutOfSpaceError(path)` from an ENOSPC/EDQUOT `err` that names
    no file (Python's `write` does not); otherwise returns."""
    if isinstance(err, OSError) and err.errno in ERRNOS and not err.filename:
        raise OutOfSpaceError(path, needed) from err


# ---- one filesystem layer: os for local paths, tf.io.gfile for the rest ----
def is_remote(path):
    """True for a path with a scheme (`gs://b/x`, `ram://x`)."""
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf  # only for remote paths: the TF-free parts never get one

    return tf.io.gfile


def glob(pattern):
    """Sorted paths matching `pattern` (local or remote)."""
    pattern = os.fspath(pattern)
    return sorted(_gfile().glob(pattern) if is_remote(pattern) else _glob.glob(pattern))


def exists(path):
    path = os.fspath(path)
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path):
    path = os.fspath(path)
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path):
    """Creates `path` and its parents; no error when it exists."""
    path = os.fspath(path)
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def getsize(path):
    path = os.fspath(path)
    return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def listdir(path):
    path = os.fspath(path)
    return _gfile().listdir(path) if is_remote(path) else os.listdir(path)


def open_file(path, mode="r"):
    """`open` for a local path (text as UTF-8), `gfile.GFile` for a remote one.

    Raises FileNotFoundError for a missing file either way.
    """
    path = os.fspath(path)
    if not is_remote(path):
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        return open(path, mode, **kwargs)
    if "r" in mode and not _gfile().exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    return _gfile().GFile(path, mode)


def append_text(path, text):
    """Appends `text` to `path` (created if missing). A remote store has no
    append: the file is read and written again, atomically."""
    path = os.fspath(path)
    if not is_remote(path):
        try:
            with open(path, "a", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as err:
            _name_full_disk(err, path)
            raise
        return
    old = ""
    if exists(path):
        with open_file(path) as f:
            old = f.read()
    write_text_atomic(path, old + text)


def copy(src, dst):
    """Copies a file, overwriting `dst` (either may be remote)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(src) or is_remote(dst):
        _gfile().copy(src, dst, overwrite=True)
    else:
        shutil.copyfile(src, dst)


def _remote_name(path):
    folder, name = os.path.dirname(path), os.path.basename(path)
    return f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"


@contextlib.contextmanager
def _remote_atomic_write(path, mode):
    gfile = _gfile()
    gfile.makedirs(os.path.dirname(path))
    tmp = _remote_name(path)
    buffer = io.BytesIO() if "b" in mode else io.StringIO(newline="")
    yield buffer
    try:
        with gfile.GFile(tmp, "wb" if "b" in mode else "w") as f:
            f.write(buffer.getvalue())
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            gfile.remove(tmp)
        raise


@contextlib.contextmanager
def _remote_atomic_path(path, suffix):
    """A local temporary file for writers that need a local name
    (`model.save`), copied to a remote temporary name, then renamed."""
    suffix = os.path.splitext(path)[1] if suffix is None else suffix
    folder = tempfile.mkdtemp(prefix="kf_remote_")
    try:
        local = os.path.join(folder, f"file{suffix}")
        open(local, "wb").close()
        yield local
        gfile = _gfile()
        gfile.makedirs(os.path.dirname(path))
        tmp = _remote_name(path)
        try:
            gfile.copy(local, tmp, overwrite=True)
            gfile.rename(tmp, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                gfile.remove(tmp)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
