"""A full disk (or quota) anywhere the library writes: one paragraph, exit 75.

Out of space is recognised by its cause, not by where it happened:
`OSError` with errno ENOSPC or EDQUOT, or TensorFlow's
`ResourceExhaustedError` whose message says so. TensorFlow's message names
the file it was writing, e.g. (TF 2.21, a CheckpointManager save on a full
tmpfs)::

    {{function_node __wrapped__SaveV2_...}} /exp/stage0/checkpoints/ckpt-8_temp/
    part-00000-of-00001.data-00000-of-00001.tempstate1393...; No space left on
    device [Op:SaveV2]

and a `tf.io.gfile.GFile` write says `/exp/big; No space left on device`.
Python's `open()` gives `[Errno 28] No space left on device` with no file
name, so the library's own writers (files.py) attach the path.

A checkpoint save that fails leaves its `ckpt-N_temp` folder; `report`
removes it, and `remove_checkpoint_temps` removes the ones a killed run left
(the next run calls it). The `checkpoint` index file is written last, so the
previous checkpoint stays the latest one and `-r` resumes from it.

This module imports no TensorFlow: the converter uses it too.
"""

import errno
import os
import re
import shutil
import sys

ERRNOS = (errno.ENOSPC, errno.EDQUOT)
MESSAGES = ("No space left on device", "Disk quota exceeded")
# TensorFlow's checkpoint writer: `<prefix>_temp` beside the final prefix.
CHECKPOINT_TEMP = re.compile(r"^ckpt-\d+_temp$")
_TF_PATH = re.compile(r"(?:^|\s|\})\s*((?:[a-z0-9]+://)?/?[^\s;{}]+); (?:" + "|".join(MESSAGES) + ")")


class OutOfSpaceError(OSError):
    """Raised by the library's writers: `path` could not be written for lack
    of space. `needed` is the size in bytes the write needed (None when not
    known)."""

    def __init__(self, path, needed=None):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.needed = needed


def _chain(err):
    """`err`, its cause and its context, each once."""
    seen = []
    while err is not None and not any(err is s for s in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _is_one(err):
    if isinstance(err, OSError) and err.errno in ERRNOS:
        return True
    # TensorFlow is not imported here: its class is recognised by name.
    return (type(err).__name__ == "ResourceExhaustedError"
            and any(m in str(err) for m in MESSAGES))


def is_out_of_space(err):
    """True when `err` (or an error it was raised from or during) is a full
    disk or an exceeded quota."""
    return any(_is_one(e) for e in _chain(err))


def error_path(err):
    """The path an out-of-space error names, or None."""
    for e in _chain(err):
        if not _is_one(e):
            continue
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        match = _TF_PATH.search(str(e))
        if match:
            return match.group(1)
    return None


def free_bytes(path):
    """Free bytes (for this user) on the filesystem holding `path`, or None
    for a remote path or one whose filesystem cannot be asked."""
    if "://" in str(path):
        return None
    probe = os.path.abspath(str(path))
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def human(size):
    """`1536` -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _checkpoint_size(folder):
    """Bytes of the newest complete checkpoint in `folder`, or None."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    steps = [int(m.group(1)) for n in names if (m := re.match(r"^ckpt-(\d+)\.index$", n))]
    if not steps:
        return None
    prefix = f"ckpt-{max(steps)}."
    return sum(os.path.getsize(os.path.join(folder, n)) for n in names if n.startswith(prefix))


def _remove(path):
    if "://" in path:
        import tensorflow as tf  # only for remote paths, where TensorFlow wrote

        tf.io.gfile.rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _temp_folder(path):
    """The `ckpt-N_temp` folder `path` lies in (or is), or None."""
    parts = str(path).rstrip("/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if CHECKPOINT_TEMP.match(parts[i]):
            return "/".join(parts[:i + 1])
    return None


def report(err, *, resume_hint="resume with -r"):
    """Removes the failed write's temporary folder; the one-paragraph message.

    Args:
        err: an exception for which `is_out_of_space` is True.
        resume_hint: str. What to run once space is freed.

    Returns:
        str, one paragraph: the path, the free space, the space needed when
        known, what was removed and what to do.
    """
    path = error_path(err)
    removed, needed = None, None
    for e in _chain(err):
        if isinstance(e, OutOfSpaceError) and e.needed:
            needed = e.needed
    temp = _temp_folder(path) if path else None
    if temp:
        if needed is None and "://" not in temp:
            needed = _checkpoint_size(os.path.dirname(temp))
        _remove(temp)
        removed = temp
    free = free_bytes(path) if path else None
    where = f"writing {path}" if path else "writing (TensorFlow named no file)"
    parts = [f"out of space {where}:"]
    parts.append(f"{human(free)} free there" if free is not None else "free space unknown")
    if needed:
        parts[-1] += f", about {human(needed)} needed" + (
            " (the size of the previous checkpoint)" if temp else "")
    parts[-1] += "."
    if removed:
        parts.append(f"Removed the unfinished {removed}.")
    parts.append("Nothing was corrupted: the previous checkpoint is intact and the "
                 f"steps after it are trained again. Free space (or move the folder), then "
                 f"{resume_hint}. ({first_line(err)})")
    return " ".join(parts)


def first_line(err):
    """`Type: first line of the message` of the innermost out-of-space error."""
    for e in _chain(err):
        if _is_one(e):
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return f"{type(e).__name__}: {text}"
    return type(err).__name__


def remove_checkpoint_temps(folder, log=None):
    """Removes `ckpt-N_temp` folders under `folder` left by a killed run.

    Args:
        folder: str. An experiment folder (local or remote).
        log: callable(str) or None. Gets one line naming what was removed.
            Defaults to printing to stderr.

    Returns:
        list of str, the removed folders.
    """
    removed = []
    for root, dirs in _walk_dirs(folder):
        for name in dirs:
            if CHECKPOINT_TEMP.match(name):
                path = f"{root.rstrip('/')}/{name}"
                _remove(path)
                removed.append(path)
    if removed:
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"removed {len(removed)} unfinished checkpoint folder(s) of an earlier run: "
            + ", ".join(removed))
    return removed


def _walk_dirs(folder):
    if "://" in str(folder):
        import tensorflow as tf

        if not tf.io.gfile.isdir(folder):
            return []
        return [(root, dirs) for root, dirs, _ in tf.io.gfile.walk(folder)]
    return [(root, dirs) for root, dirs, _ in os.walk(folder)]
