"""The converter's filesystem layer: every file it writes or reads.

The converter's output folder (shards, `{split}.manifest.json`, the failure
list inside it, `labels.txt`, the per-shard reports in `.convert/` that make
a re-run resumable, and the temporary files of atomic writes) is reached
only through the functions here, so `--out gs://bucket/records` (or `s3://`,
or fsspec's in-memory `memory://` that the tests use) works end to end. So
are the inputs: video files, the annotation files of the readers that take
a URL (csv, json, synthetic, ssv2, ucf101, kinetics, hmdb51), and frame
folders (`--dataset frames`: the listing, the frame images and imported
`x_`/`y_` flow images; `frames.py`, `flow.py`, `sources/frame_list.py`).

Why fsspec and not `tf.io.gfile` (what `klassterfork.files` uses on the
training side): the converter never imports TensorFlow (its 4 s import
would be paid by the parent and every worker; see `convert`), and fsspec
speaks the same URL schemes without it (`gs://` through gcsfs, `s3://`
through s3fs, installed by whoever uses them). Apache Beam's `FileSystems`
would do too, but Beam is an optional extra while fsspec is a small, pure
Python dependency of the package; a Beam pipeline's workers reach the
output through the same fsspec calls.

- A local path keeps `klassterfork.files`' code path unchanged: atomic
  writes to a `mkstemp` sibling with the umask's mode, then `os.replace`;
  a full disk names the path. fsspec is imported only for a scheme path.
- A scheme path (`"://"` in it, `file://` excepted) is written to a
  temporary sibling `.{name}.{8 hex}.tmp` (the name `files.atomic_write`
  gives, so `convert.remove_stale_temps` finds either) and then `fs.mv`-ed
  onto the final name: a reader sees the whole file or none, and a killed
  run leaves only a temporary that the next run removes.
- A video at a URL is decoded from a local temporary copy (`local_copy`):
  FFmpeg and the MP4 box walk (`video.cut_box`) need a file name and seek
  back and forth (an MP4's index is often at its end), which through a
  remote file object would be one request per seek.
- The images of a frame folder at a URL are fetched `_PARALLEL_READS` at a
  time (`read_files`): an object store answers each small request in tens
  of ms, so one after another a 300-frame folder would take seconds. Local
  files are read one after another with `open`, as before.
- `memory://` lives in one process: convert into it with the local runner
  (its shards are written by the parent process), not with Beam's
  multi-processing DirectRunner.
"""

import concurrent.futures
import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid

from klassterfork import files

# How many remote reads or stat calls run at once (see the module docstring).
_PARALLEL_READS = 16


def is_remote(path):
    """True for a path with a scheme other than `file://` (`gs://b/x`,
    `memory://x`)."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def _local(path):
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _filesystem(path):
    """The fsspec filesystem of a scheme path (fsspec imported only here)."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(os.fspath(path))[0]
    except (ImportError, ValueError) as e:  # unknown scheme, or its package missing
        scheme = os.fspath(path).split("://", 1)[0]
        raise type(e)(
            f"{path}: no filesystem for scheme {scheme!r} ({e}). Accepted: a local "
            "path, memory://, or a scheme whose fsspec package is installed "
            "(gs:// needs gcsfs, s3:// needs s3fs)") from e


def join(folder, *names):
    """`folder/name...` for a local folder or a URL (never folds `gs://`)."""
    folder = os.fspath(folder)
    if not is_remote(folder):
        return os.path.join(folder, *names)
    return posixpath.join(folder, *names)


def parent(path):
    """The folder holding `path` (for a URL: everything before its last `/`)."""
    if not is_remote(path):
        return os.path.dirname(os.fspath(path))
    return posixpath.dirname(os.fspath(path))


def exists(path):
    if not is_remote(path):
        return os.path.exists(_local(path))
    return _filesystem(path).exists(os.fspath(path))


def isfile(path):
    if not is_remote(path):
        return os.path.isfile(_local(path))
    return _filesystem(path).isfile(os.fspath(path))


def isdir(path):
    if not is_remote(path):
        return os.path.isdir(_local(path))
    return _filesystem(path).isdir(os.fspath(path))


def makedirs(path):
    """Creates `path` and its parents; no error when it exists."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    _filesystem(path).makedirs(os.fspath(path), exist_ok=True)


def listdir(path):
    """The names (not paths) in folder `path`.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    if not is_remote(path):
        return os.listdir(_local(path))
    fs, path = _filesystem(path), os.fspath(path)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder")
    return [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]


def remove(path):
    if not is_remote(path):
        os.remove(_local(path))
    else:
        _filesystem(path).rm(os.fspath(path))


def open_file(path, mode="r", encoding="utf-8"):
    """Opens a file to read: text (`encoding`, newlines as in the file), or "rb".

    Raises:
        FileNotFoundError: the file does not exist (either kind of path).
    """
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
    if not is_remote(path):
        return open(_local(path), mode, **kwargs)
    return _filesystem(path).open(os.fspath(path), mode, **kwargs)


def read_bytes(path):
    with open_file(path, "rb") as f:
        return f.read()


def read_files(paths):
    """The contents of files `paths` (local paths or URLs), in order.

    Local files are read one after another with `open`; when any path is a
    URL, the URLs are fetched `_PARALLEL_READS` at a time, each in one
    request (`cat_file`), so a remote frame folder is not one round trip
    per frame in sequence.

    Raises:
        FileNotFoundError: a file does not exist (the first one that fails).
    """
    paths = [os.fspath(p) for p in paths]
    if not any(map(is_remote, paths)):
        out = []
        for path in paths:
            with open(_local(path), "rb") as f:
                out.append(f.read())
        return out
    return thread_map(_cat, paths)


def _cat(path):
    """One file's bytes; a URL in one request."""
    if not is_remote(path):
        return read_bytes(path)
    try:
        return _filesystem(path).cat_file(path)
    except FileNotFoundError as e:  # fsspec's message may hold the bare key only
        raise FileNotFoundError(f"{path}: no such file") from e


def thread_map(fn, items):
    """`[fn(x) for x in items]`, `_PARALLEL_READS` calls at a time: for calls
    that wait on a remote filesystem (reads, stat calls), not for CPU work.
    The first exception raised (in `items` order) propagates, and the calls
    not started yet are cancelled rather than run for nothing."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    pool = concurrent.futures.ThreadPoolExecutor(min(_PARALLEL_READS, len(items)))
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def local_copy(path):
    """Yields a local file name holding `path`'s bytes: `path` itself when
    local; for a URL a temporary copy (same suffix), removed afterwards.

    Raises:
        FileNotFoundError: a URL that names no file.
    """
    if not is_remote(path):
        yield _local(path)
        return
    fd, tmp = tempfile.mkstemp(prefix="kf_input_",
                               suffix=posixpath.splitext(os.fspath(path))[1])
    try:
        with os.fdopen(fd, "wb") as out, open_file(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Opens a temporary sibling of `path`; moves it onto `path` after.

    The move happens only when the block exits without an exception; on
    one, the temporary is removed. See the module docstring.

    Args:
        path: str or Path (local) or URL. Its folder is created if missing.
        mode: str. "w" (text, UTF-8) or "wb". Defaults to "w".

    Yields:
        The open temporary file object.
    """
    if not is_remote(path):
        with files.atomic_write(_local(path), mode) as f:
            yield f
        return
    path = os.fspath(path)
    fs = _filesystem(path)
    folder, name = posixpath.split(path)
    fs.makedirs(folder, exist_ok=True)
    tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with fs.open(tmp, mode, **kwargs) as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that matters is `raise`d
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_write(path) as f:
        f.write(text)
