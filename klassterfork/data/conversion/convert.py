"""Videos -> sharded TFRecords: parallel, resumable, with an error report.

`convert(annotation, out_dir, split=...)` decodes every video of an
`Annotation` (see `sources/`) in worker processes, JPEG-encodes its frames
and serializes one `SequenceExample` per video (`records.write`) into
`{split}-{i:05d}-of-{n:05d}.tfrecord` shards, then `{split}.manifest.json`
and `labels.txt`. `beam_convert.run` runs the same steps as an Apache Beam
pipeline; both go through the functions here, in this order:

1. `plan` (in `planning`, re-exported here): settings, the entries (a
   repeated id is skipped and reported), the shard of each entry, and which
   shards a re-run must still write.
2. `convert_entry` (a worker's task): a video -> `Converted`, either the
   serialized record or the reason it failed.
3. `write_shard`: a shard's `Converted` -> the shard file (atomic), with its
   report in `.convert/{shard}.json`.
4. `finish`: the reports -> manifest, labels.txt, warnings, `--strict`.

- Shard assignment is a fixed-seed permutation of the entry order, dealt
  round-robin, so classes listed in blocks (UCF101, Kinetics) mix in every
  shard and a re-run assigns every video to the same shard.
- A re-run with the same settings skips shards whose file and report both
  exist (the report is written first, the shard renamed last).
- A video that fails to decode (or ends early: "truncated") is listed in the
  manifest with the reason and the run goes on; `strict=True` raises
  `ConversionError`, after the manifest is written, when anything was not
  converted: failed, missing or skipped.
- Every output (shards, manifest, labels.txt, reports, temporary files) goes
  through `fs`: `out_dir` may be a local folder or a URL (`gs://`, `s3://`,
  `memory://`), without TensorFlow.
- No TensorFlow anywhere here: records are serialized and framed by
  `records` itself, so neither the parent nor the workers pay TensorFlow's
  4 s import (at 18 videos that was a third of the run). Workers are
  forked (no re-import of the main module as under "spawn").
"""

import collections
import concurrent.futures
import dataclasses
import fnmatch
import glob
import json
import logging
import multiprocessing
import os
import sys

import tqdm

from klassterfork.data import records
from klassterfork.data.conversion import fs, video, video_flow
from klassterfork.data.conversion.planning import (  # noqa: F401  (re-exported)
    BYTES_PER_PIXEL,
    SHARD_BYTES,
    STATE_DIR,
    Plan,
    choose_num_shards,
    entries_key,
    load_reports,
    plan,
    shard_assignment,
    unique_entries,
)
from klassterfork.data.conversion.sources import frame_list

LOG = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """`strict` conversion with anything not converted; the manifest is written.

    Attributes:
        manifest_path: str.
        problems: list of {"path", "reason"}: failed, missing and skipped.
    """

    def __init__(self, manifest_path, problems):
        lines = "\n".join(f"  {p['path']}: {p['reason']}" for p in problems)
        super().__init__(
            f"{len(problems)} video(s) not converted (see {manifest_path}):\n{lines}"
        )
        self.manifest_path = manifest_path
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Converted:
    """What a worker sends back for one entry (picklable, small to ship).

    Attributes:
        video_id, path: str. The entry.
        record: bytes or None. The serialized `SequenceExample`; None when the
            video failed.
        frames: int. Frames in `record`.
        reason: str or None. Why it failed, or why a kept clip is marked
            (`keep_truncated`); None for a complete video.
    """

    video_id: str
    path: str
    record: bytes | None
    frames: int = 0
    reason: str | None = None


def _write_json(path, data):
    fs.write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _init_worker():
    # One OpenCV thread per process: the processes are the parallelism.
    video.cv2.setNumThreads(1)


def _encode(entry, options):
    """Decodes and JPEG-encodes a video file, or a frame folder (`FrameEntry`)."""
    if isinstance(entry, frame_list.FrameEntry):
        kwargs = {k: v for k, v in options.items() if k != "keep_truncated"}
        return frame_list.encode_entry(entry, **kwargs)
    if not fs.is_remote(entry.path):
        return _encode_file(entry.path, options)
    try:  # a URL: decoded from a local copy (see `fs`)
        with fs.local_copy(entry.path) as local:
            try:
                return _encode_file(local, options)
            except video.VideoDecodeError as e:  # the reason names the URL
                raise video.VideoDecodeError(
                    entry.path, e.reason.replace(local, entry.path)) from None
    except FileNotFoundError:
        raise video.VideoDecodeError(entry.path, "file not found") from None


def _encode_file(path, options):
    if options.get("flow"):  # Farneback on the decoded frames
        kwargs = {k: v for k, v in options.items() if k != "flow"}
        return video_flow.decode_to_jpeg_with_flow(path, flow=options["flow"], **kwargs)
    kwargs = {k: v for k, v in options.items() if k not in ("flow", "flow_bound")}
    return video.decode_to_jpeg(path, **kwargs)


def _reason(error):
    if isinstance(error, video.VideoDecodeError):
        return error.reason
    return f"{type(error).__name__}: {error}"


def convert_entry(entry, options):
    """Step 2, a worker's task: one entry -> `Converted` (never raises for a
    bad video: the reason goes to the manifest and the run goes on)."""
    try:
        result = _encode(entry, options)
        record = records.write(
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
        )
    except Exception as e:  # reported per video; the run goes on
        return Converted(entry.video_id, entry.path, None, reason=_reason(e))
    return Converted(entry.video_id, entry.path, record, len(result.frames),
                     getattr(result, "truncated", None))


def _run_tasks(entries, options, workers):
    """Yields `Converted` per entry, in order."""
    if workers <= 1:
        for entry in entries:
            yield convert_entry(entry, options)
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
            pending.append(pool.submit(convert_entry, entry, options))
            if len(pending) >= 2 * workers + 2:
                break
        while pending:
            result = pending.popleft().result()
            for entry in it:
                pending.append(pool.submit(convert_entry, entry, options))
                break
            yield result


def write_shard(out_dir, name, members, results, settings, on_result=None):
    """Step 3: writes one shard atomically; returns (and saves) its report.

    Args:
        out_dir, name: str. Folder and shard file name.
        members: list of VideoEntry, the shard's entries in order.
        results: iterable of `Converted`, one per member, same order.
        settings: dict, stored in the report.
        on_result: callable or None. Called after each result (progress).

    Returns:
        dict: file, videos, frames, failed, truncated, ids, settings.
    """
    failed, truncated, frames, written = [], [], 0, 0
    with fs.atomic_write(fs.join(out_dir, name), "wb") as f:
        writer = records.RecordWriter(f)
        for entry, result in zip(members, results, strict=True):
            if result.video_id != entry.video_id:
                raise RuntimeError(f"{name}: result for {result.video_id!r} "
                                   f"where {entry.video_id!r} was expected")
            if on_result is not None:
                on_result()
            note = {"id": entry.video_id, "path": entry.path, "reason": result.reason}
            if result.record is None:
                failed.append(note)
                continue
            if result.reason:
                truncated.append(note)
            writer.write(result.record)
            written += 1
            frames += result.frames
        report = {
            "file": name,
            "videos": written,
            "frames": frames,
            "failed": failed,
            "truncated": truncated,
            "ids": [e.video_id for e in members],
            "entries_key": entries_key(members),
            "settings": settings,
        }
        # Before the shard's rename: a report without its shard is ignored.
        _write_json(fs.join(out_dir, STATE_DIR, f"{name}.json"), report)
    return report


def finish(job, annotation, *, source=None, strict=False, extra=None):
    """Step 4: manifest and labels.txt from the shard reports; warnings; strict.

    Returns:
        dict, the manifest.

    Raises:
        ConversionError: with `strict`, when anything was not converted.
    """
    manifest = _manifest(annotation, job, source)
    if extra:
        manifest.update(extra)
    manifest_path = fs.join(job.out_dir, f"{job.split}.manifest.json")
    _write_json(manifest_path, manifest)
    fs.write_text_atomic(
        fs.join(job.out_dir, "labels.txt"),
        "".join(f"{i},{name}\n" for i, name in enumerate(annotation.label_names)),
    )
    counts = manifest["counts"]
    problems = not_converted(manifest)
    if problems or counts["truncated"]:
        LOG.warning(
            "%s: %d of %d videos failed, %d missing, %d skipped, %d kept truncated; "
            "see %s", job.split, counts["failed"], counts["videos"],
            counts["missing"], counts["skipped"], counts["truncated"], manifest_path,
        )
    if strict and problems:
        raise ConversionError(manifest_path, problems)
    return manifest


def not_converted(manifest):
    """Every annotated video that is not in the records: {"path", "reason"}."""
    return [{"path": p["path"], "reason": p["reason"]}
            for key in ("failed", "missing", "skipped") for p in manifest[key]]


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
    keep_truncated=False,
):
    """Converts one split to TFRecord shards (see the module docstring).

    Frame-folder entries (`--dataset frames`) are stored without re-encoding
    when already at the target size; `flow` ("farneback" or "import") adds
    `flow/x`, `flow/y` JPEGs clipped to `flow_bound` (video files: "farneback").

    Args:
        annotation: `sources.Annotation`.
        out_dir: str. Output folder (created): a local path or a URL
            (`gs://b/records`, `memory://x`; see `fs`).
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
        strict: bool. Raise `ConversionError` when anything was not
            converted (failed, missing or skipped).
        progress: bool. tqdm bar over videos. Defaults to True.
        source: dict or None. What produced `annotation` (dataset name,
            annotation path), copied into the manifest.
        keep_truncated: bool. Store the frames of videos that end early,
            listed under "truncated" in the manifest, instead of failing them.

    Returns:
        dict, the manifest also written to `{out_dir}/{split}.manifest.json`.

    Raises:
        ValueError: a bad argument or an annotation without videos.
        ConversionError: with `strict`, when anything was not converted.
    """
    job = plan(annotation, out_dir, split=split, short_side=short_side, fps=fps,
               max_frames=max_frames, num_shards=num_shards,
               jpeg_quality=jpeg_quality, flow=flow, flow_bound=flow_bound,
               keep_truncated=keep_truncated)
    remove_stale_temps(job.out_dir, job.names)
    workers = workers or os.cpu_count() or 1
    bar = tqdm.tqdm(
        total=len(job.entries),
        initial=sum(len(job.shards[k]) for k in job.reports),
        desc=f"convert {split}",
        unit="video",
        disable=not progress,
        file=sys.stderr,
    )
    todo = job.todo
    jobs = [entry for k in todo for entry in job.members(k)]
    results = _run_tasks(jobs, job.options, workers)
    for k in todo:
        members = job.members(k)
        job.reports[k] = write_shard(
            job.out_dir, job.names[k], members,
            (next(results) for _ in members), job.settings, on_result=bar.update,
        )
    bar.close()
    return finish(job, annotation, source=source, strict=strict,
                  extra={"runner": {"name": "local", "workers": workers}})


def remove_stale_temps(out_dir, names, log=None):
    """Removes the temporary files (`.{shard}.XXXX.tmp`, `fs.atomic_write`)
    a killed conversion left beside the shards `names`, with one log line.

    Returns:
        list of str, the removed files.
    """
    try:
        listing = fs.listdir(out_dir)
    except FileNotFoundError:
        return []
    stale = sorted(fs.join(out_dir, f) for n in names
                   for f in fnmatch.filter(listing, f".{glob.escape(n)}.*.tmp"))
    for path in stale:
        fs.remove(path)
    if stale:
        (log or LOG.warning)(f"removed {len(stale)} unfinished shard file(s) of an "
                             f"earlier, killed conversion: {', '.join(stale)}")
    return stale


def _manifest(annotation, job, source):
    ordered = [job.reports[k] for k in range(len(job.names))]
    failed = [f for r in ordered for f in r["failed"]]
    truncated = [f for r in ordered for f in r.get("truncated", [])]
    manifest = {
        "split": job.split,
        "source": source or {},
        "counts": {
            "videos": sum(len(r["ids"]) for r in ordered),
            "written": sum(r["videos"] for r in ordered),
            "frames": sum(r["frames"] for r in ordered),
            "failed": len(failed),
            "missing": len(annotation.missing),
            "skipped": len(job.skipped),
            "truncated": len(truncated),
        },
        "label_names": list(annotation.label_names),
        "settings": job.settings,
        "shards": [
            {"file": r["file"], "videos": r["videos"], "frames": r["frames"]}
            for r in ordered
        ],
        "failed": failed,
        "missing": [{"path": p, "reason": why} for p, why in annotation.missing],
        "skipped": job.skipped,
        "truncated": truncated,
    }
    if annotation.flip_label_map is not None:
        manifest["flip_label_map"] = list(annotation.flip_label_map)
    return manifest
