"""Step 1 of a conversion: the plan (see `convert`).

`plan(annotation, out_dir, split=...)` checks the settings, keeps one entry
per id (`unique_entries`; the others are reported as skipped), chooses the
shard count from the estimated output size (`choose_num_shards`), deals the
entries to shards (`shard_assignment`) and finds the shards a previous run
with the same settings and entries already completed (`load_reports`).

- Shard assignment is a fixed-seed permutation of the entry order, dealt
  round-robin, so classes listed in blocks (UCF101, Kinetics) mix in every
  shard and a re-run assigns every video to the same shard.
- A shard counts as complete when its file and its report
  (`{out_dir}/.convert/{shard}.json`) both exist and the report holds the
  same settings, ids and `entries_key`.
- Every file is reached through `fs` (local, `gs://`, `memory://`, ...).
- No TensorFlow here (see `convert`).
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os

import av
import numpy as np

from klassterfork.data import records
from klassterfork.data.conversion import fs, video

LOG = logging.getLogger(__name__)

STATE_DIR = ".convert"  # per-shard reports that make a re-run resumable
SHARD_BYTES = 128 * 2**20  # target shard size for the default shard count
MIN_VIDEOS_PER_SHARD = 32
MAX_SHARDS_BY_COUNT = 16  # at least min(16, n / 32) shards, for shuffling
BYTES_PER_PIXEL = 0.35  # JPEG q90 of natural video, measured on ../shared/data
ORDER_SEED = 0


@dataclasses.dataclass
class Plan:
    """Everything a runner needs to convert one split (see `plan`).

    Attributes:
        out_dir, split: str.
        entries: list of VideoEntry, unique ids, in annotation order.
        skipped: list of {"id", "path", "reason"}: entries left out.
        settings: dict. Stored in reports and the manifest; a re-run with
            other settings rewrites every shard.
        options: dict. Keyword arguments of the worker task.
        shards: list of lists of int: entry indices per shard.
        names: list of str: shard file names.
        reports: dict shard index -> report of the complete shards.
    """

    out_dir: str
    split: str
    entries: list
    skipped: list
    settings: dict
    options: dict
    shards: list
    names: list
    reports: dict

    @property
    def todo(self):
        """Indices of the shards still to write."""
        return [k for k in range(len(self.shards)) if k not in self.reports]

    def members(self, k):
        return [self.entries[i] for i in self.shards[k]]


def shard_assignment(num_entries, num_shards):
    """Entry indices per shard: a fixed permutation dealt round-robin.

    Returns:
        list of `num_shards` lists of int; together a permutation of
        range(num_entries). Depends only on the two counts.
    """
    order = np.random.default_rng(ORDER_SEED).permutation(num_entries)
    return [order[k::num_shards].tolist() for k in range(num_shards)]


def _probe_frames(path, fps, max_frames):
    """(frames, height, width) from the header: an estimate for sizing only.
    A URL is opened as a file object: FFmpeg reads the header, not the file."""
    try:
        with contextlib.ExitStack() as stack:
            source = (stack.enter_context(fs.open_file(path, "rb"))
                      if fs.is_remote(path) else path)
            container = stack.enter_context(av.open(source))
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            frames = stream.frames
            if not frames:
                seconds = (
                    float(stream.duration * stream.time_base)
                    if stream.duration
                    else (container.duration or 10 * av.time_base) / av.time_base
                )
                frames = seconds * rate
            if fps:
                frames *= fps / rate
            if max_frames:
                frames = min(frames, max_frames)
            return frames, stream.height, stream.width
    except (av.FFmpegError, OSError, IndexError, ZeroDivisionError, TypeError):
        return None


def choose_num_shards(entries, *, short_side=128, fps=None, max_frames=None):
    """Default shard count from the estimated output size.

    Probes the headers of up to 16 evenly spread videos (header counts are
    estimates: fine for sizing, never used for the records), estimates
    `BYTES_PER_PIXEL` JPEG bytes per stored pixel, and aims at
    `SHARD_BYTES` per shard, with at least min(16, ceil(n / 32)) shards.

    Returns:
        int >= 1.
    """
    n = len(entries)
    if n == 0:
        return 1
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, 16))})
    sizes = []
    for i in picks:
        probe = _probe_frames(entries[i].path, fps, max_frames)
        if probe is None:
            continue
        frames, height, width = probe
        h, w = video.short_side_size(height, width, short_side)
        sizes.append(frames * h * w * BYTES_PER_PIXEL)
    per_video = float(np.mean(sizes)) if sizes else 300 * 128 * 170 * BYTES_PER_PIXEL
    by_size = math.ceil(per_video * n / SHARD_BYTES)
    by_count = min(MAX_SHARDS_BY_COUNT, math.ceil(n / MIN_VIDEOS_PER_SHARD))
    return max(1, by_size, by_count)

def entries_key(members):
    """A digest of what a shard's records hold besides the settings: each
    member's id, file, labels and label text. A re-run with another label
    map (or a changed file list) then rewrites the shard instead of keeping
    records with the old labels."""
    rows = [[e.video_id, e.path, list(e.labels), e.label_text] for e in members]
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


def _load_report(out_dir, name, settings, ids, key):
    """The report of a complete shard written with these settings, or None."""
    report_path = fs.join(out_dir, STATE_DIR, f"{name}.json")
    shard_path = fs.join(out_dir, name)
    if not (fs.exists(shard_path) and fs.exists(report_path)):
        return None
    try:
        with fs.open_file(report_path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    if (report.get("settings"), report.get("ids"), report.get("entries_key")) != (
            settings, ids, key):
        return None
    return report


def unique_entries(entries):
    """Keeps the first entry of each id; the others are reported.

    Ids name examples in predictions and submissions, so they must be unique
    within a split; the same file listed twice would also be an example twice.

    Returns:
        (list of VideoEntry, list of {"id", "path", "reason"}).
    """
    first, kept, skipped = {}, [], []
    for entry in entries:
        if entry.video_id in first:
            again = "the same file" if first[entry.video_id] == entry.path else (
                f"first listed for {first[entry.video_id]}")
            skipped.append({"id": entry.video_id, "path": entry.path,
                            "reason": f"duplicate id {entry.video_id!r} ({again}); "
                                      "the first row is kept"})
            continue
        first[entry.video_id] = entry.path
        kept.append(entry)
    return kept, skipped


def plan(
    annotation,
    out_dir,
    *,
    split,
    short_side=128,
    fps=None,
    max_frames=None,
    num_shards=None,
    jpeg_quality=90,
    flow=None,
    flow_bound=20.0,
    keep_truncated=False,
):
    """Step 1: checks the arguments, assigns shards, finds complete ones.

    Args: as `convert`.

    Returns:
        `Plan`.

    Raises:
        ValueError: a bad argument, an annotation without videos, or
            another split in `out_dir` with other label names
            (`check_same_labels`).
    """
    check_same_labels(out_dir, split, annotation.label_names)
    entries, skipped = unique_entries(annotation.entries)
    if not entries:
        raise ValueError(
            f"split {split!r} has no video to convert "
            f"({len(annotation.missing)} annotated videos are missing)."
        )
    if num_shards is not None and not (
            isinstance(num_shards, int) and num_shards >= 1):
        raise ValueError(
            f"`num_shards` must be a positive int. Received: {num_shards=}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(
            f"`jpeg_quality` must be in [1, 100]. Received: {jpeg_quality=}")
    if num_shards is None:
        num_shards = choose_num_shards(
            entries, short_side=short_side, fps=fps, max_frames=max_frames
        )
    if num_shards > len(entries):
        LOG.warning("split %r: %d shards requested, %d used: a shard holds at least one "
                    "video and there are %d", split, num_shards, len(entries), len(entries))
    num_shards = min(num_shards, len(entries))
    fs.makedirs(fs.join(out_dir, STATE_DIR))
    settings = {
        "short_side": short_side,
        "fps": fps,
        "max_frames": max_frames,
        "jpeg_quality": int(jpeg_quality),
        "num_shards": num_shards,
    }
    if flow is not None:
        settings["flow"], settings["flow_bound"] = flow, float(flow_bound)
    if keep_truncated:
        settings["keep_truncated"] = True
    options = dict(short_side=short_side, fps=fps, max_frames=max_frames,
                   quality=int(jpeg_quality), flow=flow, flow_bound=float(flow_bound),
                   keep_truncated=bool(keep_truncated))
    shards = shard_assignment(len(entries), num_shards)
    names = [records.shard_name(split, k, num_shards) for k in range(num_shards)]
    job = Plan(out_dir=os.fspath(out_dir), split=split, entries=entries,
               skipped=skipped, settings=settings, options=options, shards=shards,
               names=names, reports={})
    return load_reports(job)


def check_same_labels(out_dir, split, label_names):
    """Refuses a split whose label list differs from another split's in
    `out_dir` (`labels.txt` is shared: one split's would overwrite the
    other's, and their label indices would mean other classes).

    Raises:
        ValueError: naming the other split's manifest and the first
            difference.
    """
    names = list(label_names)
    try:
        listing = sorted(fs.listdir(out_dir))
    except OSError:
        return
    for file_name in listing:
        other = file_name[: -len(".manifest.json")]
        if not file_name.endswith(".manifest.json") or other == split:
            continue
        try:
            with fs.open_file(fs.join(out_dir, file_name)) as f:
                theirs = json.load(f).get("label_names")
        except (OSError, ValueError):
            continue
        if theirs is None or list(theirs) == names:
            continue
        i = next((i for i, (a, b) in enumerate(zip(names, theirs)) if a != b),
                 min(len(names), len(theirs)))
        raise ValueError(
            f"split {split!r} has {len(names)} labels, split {other!r} in {out_dir} "
            f"({file_name}) has {len(theirs)}, and they differ at index {i} "
            f"({names[i] if i < len(names) else None!r} vs "
            f"{theirs[i] if i < len(theirs) else None!r}): labels.txt is shared by "
            "the splits of one --out. Give both the same --labels file, or use "
            "another --out.")


def load_reports(job):
    """Fills `job.reports` with the complete shards on disk; returns `job`."""
    for k, members in enumerate(job.shards):
        entries = [job.entries[i] for i in members]
        report = _load_report(job.out_dir, job.names[k], job.settings,
                              [e.video_id for e in entries], entries_key(entries))
        if report is not None:
            job.reports[k] = report
    return job
