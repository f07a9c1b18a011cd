"""Videos -> sharded TFRecords: parallel, resumable, with an error report.

`convert(annotation, out_dir, split=...)` decodes every video of an
`Annotation` (see `sources/`) in worker processes, JPEG-encodes its frames
and writes one `SequenceExample` per video (`records.write`) into
`{split}-{i:05d}-of-{n:05d}.tfrecord` shards, then `{split}.manifest.json`
and `labels.txt`.

- Shard assignment is a fixed-seed permutation of the entry order, dealt
  round-robin, so classes listed in blocks (UCF101, Kinetics) mix in every
  shard and a re-run assigns every video to the same shard.
- A shard is written under a temporary name, its report goes to
  `.convert/{shard}.json`, then the shard is renamed. A re-run with the same
  settings skips shards whose file and report both exist.
- A video that fails to decode is listed in the manifest with the reason and
  the run goes on; `strict=True` raises `ConversionError` after the
  manifest is written.
- Workers are forked: they run only `video.decode_to_jpeg` (PyAV, OpenCV,
  NumPy), never TensorFlow, so the parent's TF state is never used in a
  child, and a child does not pay TensorFlow's 4-5 s import as it would under
  "spawn" (which re-imports the main module). The parent writes the records.
"""

import collections
import concurrent.futures
import json
import logging
import math
import multiprocessing
import os
import sys

import av
import numpy as np
import tensorflow as tf
import tqdm

from klassterfork.data import records, video
from klassterfork.data.sources import frame_list
from klassterfork.files import write_text_atomic

LOG = logging.getLogger(__name__)

STATE_DIR = ".convert"  # per-shard reports that make a re-run resumable
SHARD_BYTES = 128 * 2**20  # target shard size for the default shard count
MIN_VIDEOS_PER_SHARD = 32
MAX_SHARDS_BY_COUNT = 16  # at least min(16, n / 32) shards, for shuffling
BYTES_PER_PIXEL = 0.35  # JPEG q90 of natural video, measured on ../shared/data
ORDER_SEED = 0


class ConversionError(RuntimeError):
    """`strict` conversion with failed videos; the manifest is written."""

    def __init__(self, manifest_path, failed):
        lines = "\n".join(f"  {f['path']}: {f['reason']}" for f in failed[:20])
        more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
        super().__init__(
            f"{len(failed)} video(s) failed (see {manifest_path}):\n{lines}{more}"
        )
        self.manifest_path = manifest_path
        self.failed = failed


def shard_assignment(num_entries, num_shards):
    """Entry indices per shard: a fixed permutation dealt round-robin.

    Returns:
        list of `num_shards` lists of int; together a permutation of
        range(num_entries). Depends only on the two counts.
    """
    order = np.random.default_rng(ORDER_SEED).permutation(num_entries)
    return [order[k::num_shards].tolist() for k in range(num_shards)]


def _probe_frames(path, fps, max_frames):
    """(frames, height, width) from the header: an estimate for sizing only."""
    try:
        with av.open(path) as container:
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
    except (av.FFmpegError, IndexError, ZeroDivisionError, TypeError):
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


_write_atomic = write_text_atomic


def _write_json(path, data):
    _write_atomic(path, json.dumps(data, indent=1) + "\n")


def _load_report(out_dir, name, settings, ids):
    """The report of a complete shard written with these settings, or None."""
    report_path = os.path.join(out_dir, STATE_DIR, f"{name}.json")
    if not (os.path.exists(os.path.join(out_dir, name)) and os.path.exists(report_path)):
        return None
    try:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    if report.get("settings") != settings or report.get("ids") != ids:
        return None
    return report


def _init_worker():
    # One OpenCV thread per process: the processes are the parallelism.
    video.cv2.setNumThreads(1)


def _encode(entry, options):
    """One worker task: a video file, or a frame folder (`FrameEntry`)."""
    if isinstance(entry, frame_list.FrameEntry):
        return frame_list.encode_entry(entry, **options)
    if options.get("flow"):
        raise ValueError(
            f"optical flow is computed for frame-folder datasets only (--dataset frames); "
            f"{entry.path} is a video file"
        )
    kwargs = {k: v for k, v in options.items() if k not in ("flow", "flow_bound")}
    return video.decode_to_jpeg(entry.path, **kwargs)


def _run_tasks(entries, options, workers):
    """Yields EncodedVideo or Exception per entry, in order."""
    if workers <= 1:
        for entry in entries:
            try:
                yield _encode(entry, options)
            except Exception as e:  # reported per video; the run goes on
                yield e
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
    ) as pool:
        pending = collections.deque()
        it = iter(entries)
        for entry in it:
            pending.append(pool.submit(_encode, entry, options))
            if len(pending) >= 2 * workers + 2:
                break
        while pending:
            future = pending.popleft()
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                raise
            except Exception as e:  # reported per video; the run goes on
                result = e
            for entry in it:
                pending.append(pool.submit(_encode, entry, options))
                break
            yield result


def _reason(error):
    if isinstance(error, video.VideoDecodeError):
        return error.reason
    return f"{type(error).__name__}: {error}"


def convert(
    annotation,
    out_dir,
    *,
    split,
    short_side=128,
    fps=None,
    max_frames=None,
    workers=None,
    num_shards=None,
    jpeg_quality=90,
    strict=False,
    progress=True,
    source=None,
    flow=None,
    flow_bound=20.0,
):
    """Converts one split to TFRecord shards (see the module docstring).

    Frame-folder entries (`--dataset frames`) are stored without re-encoding
    when already at the target size; `flow` ("farneback" or "import") adds
    `flow/x`, `flow/y` JPEGs clipped to `flow_bound` (frame folders only).

    Args:
        annotation: `sources.Annotation`.
        out_dir: str. Output folder (created).
        split: str. Shard prefix and manifest name.
        short_side: int or None. Frames resized so min(H, W) equals it.
            Defaults to 128.
        fps: float or None. Resample by timestamp. Defaults to None (all).
        max_frames: int or None. Keep the first N (output) frames.
        workers: int or None. Decoding processes; None = CPU count, 1 = in
            this process.
        num_shards: int or None. None chooses from the data size
            (`choose_num_shards`).
        jpeg_quality: int in [1, 100]. Defaults to 90.
        strict: bool. Raise `ConversionError` when a video failed.
        progress: bool. tqdm bar over videos. Defaults to True.
        source: dict or None. What produced `annotation` (dataset name,
            annotation path), copied into the manifest.

    Returns:
        dict, the manifest also written to `{out_dir}/{split}.manifest.json`.

    Raises:
        ValueError: a bad argument or an annotation without videos.
        ConversionError: with `strict`, when any video failed.
    """
    entries = list(annotation.entries)
    if not entries:
        raise ValueError(
            f"split {split!r} has no video to convert "
            f"({len(annotation.missing)} annotated videos are missing)."
        )
    if num_shards is not None and not (isinstance(num_shards, int) and num_shards >= 1):
        raise ValueError(f"`num_shards` must be a positive int. Received: {num_shards=}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"`jpeg_quality` must be in [1, 100]. Received: {jpeg_quality=}")
    workers = workers or os.cpu_count() or 1
    if num_shards is None:
        num_shards = choose_num_shards(
            entries, short_side=short_side, fps=fps, max_frames=max_frames
        )
    num_shards = min(num_shards, len(entries))
    os.makedirs(os.path.join(out_dir, STATE_DIR), exist_ok=True)
    settings = {
        "short_side": short_side,
        "fps": fps,
        "max_frames": max_frames,
        "jpeg_quality": int(jpeg_quality),
        "num_shards": num_shards,
    }
    if flow is not None:
        settings["flow"], settings["flow_bound"] = flow, float(flow_bound)
    options = dict(short_side=short_side, fps=fps, max_frames=max_frames,
                   quality=int(jpeg_quality), flow=flow, flow_bound=float(flow_bound))
    shards = shard_assignment(len(entries), num_shards)
    names = [records.shard_name(split, k, num_shards) for k in range(num_shards)]
    reports, todo = {}, []
    for k, members in enumerate(shards):
        ids = [entries[i].video_id for i in members]
        report = _load_report(out_dir, names[k], settings, ids)
        if report is None:
            todo.append(k)
        else:
            reports[k] = report
    bar = tqdm.tqdm(
        total=len(entries),
        initial=sum(len(shards[k]) for k in reports),
        desc=f"convert {split}",
        unit="video",
        disable=not progress,
        file=sys.stderr,
    )
    jobs = [entries[i] for k in todo for i in shards[k]]
    results = _run_tasks(jobs, options, workers)
    for k in todo:
        reports[k] = _write_shard(
            out_dir, names[k], [entries[i] for i in shards[k]], results, settings, bar
        )
    bar.close()
    manifest = _manifest(annotation, split, settings, names, reports, source)
    manifest_path = os.path.join(out_dir, f"{split}.manifest.json")
    _write_json(manifest_path, manifest)
    _write_atomic(
        os.path.join(out_dir, "labels.txt"),
        "".join(f"{i},{name}\n" for i, name in enumerate(annotation.label_names)),
    )
    counts = manifest["counts"]
    if counts["failed"] or counts["missing"]:
        LOG.warning(
            "%s: %d of %d videos failed to decode, %d missing; see %s",
            split, counts["failed"], counts["videos"], counts["missing"],
            manifest_path,
        )
    if strict and manifest["failed"]:
        raise ConversionError(manifest_path, manifest["failed"])
    return manifest


def _write_shard(out_dir, name, members, results, settings, bar):
    """Writes one shard from the next `len(members)` results; returns its report."""
    path = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, f".{name}.partial")
    failed, frames, written = [], 0, 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for entry in members:
            result = next(results)
            bar.update()
            if isinstance(result, Exception):
                failed.append({"id": entry.video_id, "path": entry.path,
                               "reason": _reason(result)})
                continue
            writer.write(records.write(
                video_id=entry.video_id,
                frames=result.frames,
                labels=entry.labels,
                label_text=entry.label_text,
                fps=result.fps,
                height=result.height,
                width=result.width,
                source=entry.path,
                flow_x=getattr(result, "flow_x", None),
                flow_y=getattr(result, "flow_y", None),
                flow_bound=getattr(result, "flow_bound", None),
            ))
            written += 1
            frames += len(result.frames)
    report = {
        "file": name,
        "videos": written,
        "frames": frames,
        "failed": failed,
        "ids": [e.video_id for e in members],
        "settings": settings,
    }
    _write_json(os.path.join(out_dir, STATE_DIR, f"{name}.json"), report)
    os.replace(tmp, path)
    return report


def _manifest(annotation, split, settings, names, reports, source):
    ordered = [reports[k] for k in range(len(names))]
    failed = [f for r in ordered for f in r["failed"]]
    manifest = {
        "split": split,
        "source": source or {},
        "counts": {
            "videos": sum(len(r["ids"]) for r in ordered),
            "written": sum(r["videos"] for r in ordered),
            "frames": sum(r["frames"] for r in ordered),
            "failed": len(failed),
            "missing": len(annotation.missing),
        },
        "label_names": list(annotation.label_names),
        "settings": settings,
        "shards": [
            {"file": r["file"], "videos": r["videos"], "frames": r["frames"]}
            for r in ordered
        ],
        "failed": failed,
        "missing": [{"path": p, "reason": why} for p, why in annotation.missing],
    }
    if annotation.flip_label_map is not None:
        manifest["flip_label_map"] = list(annotation.flip_label_map)
    return manifest
