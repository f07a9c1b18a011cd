"""Input-pipeline throughput: our train/eval pipelines against baselines.

    python bench/pipeline.py [--files GLOB] [--videos DIR] [--seconds 10] [--no-cache]

Records: `--files` (existing shards), else real videos (`--videos`, default
../shared/data/videos) decoded with PyAV, short side resized to 128 and stored
as JPEG (quality 90), else generated textured frames. Train clips are
16 x 112^2, batch 8. Measured in one run, on the same records:

  (1) ours        `pipeline.train_dataset` defaults (gathers the 16 sampled
                  JPEGs, one random 112^2 window per clip, decode +
                  window slice, flip, per-frame standardization to
                  float32).
      ours_u8     the same with standardize="none": uint8 clips, the model
                  standardizes (the float work moves to the accelerator).
      ours_scale  crop_scale=(0.8, 1.0): scale jitter + bilinear resize.
  (2) bound       parse + `tf.io.decode_jpeg` of exactly the 16 needed frames,
                  nothing else (one pixel a frame is batched).
      bound_unbuf the bound reading its shards unbuffered, as our pipeline
                  reads local shards (`resume.read_shard`): the default
                  256 KiB buffer copies each record once more.
      bound_clip  the same plus what every clip pipeline adds: the 112^2
                  window of each frame (fixed offset), stacked and batched.
  (3) garden      Model-Garden style: parse, gather 16 frames, decode full
                  frames, random crop 112, flip, to float.
      all_frames  naive: decode every frame of the video, then sample, crop.
  (4) pyav        decode the clip from the video file with PyAV (the
                  mmaction2 / VideoMAE way), 2 worker processes (only with
                  videos).
Eval: videos/s of `pipeline.eval_dataset` for 25x1 and 10x3 views against
the bound of decoding each needed unique frame once: float views, uint8
views, and uint8 views in chunks of 10 (`views_per_chunk`).

`--malloc default` leaves glibc's malloc as it is; by default every row runs
with the settings kf-train applies (`data/runtime/allocator.py`).

`--no-cache`: every row reads the same record files from disk, not from the
page cache: a thread evicts the shards' pages (`posix_fadvise(DONTNEED)`, no
root needed) every 20 ms while a row is measured, so each pass re-reads them.

The last line is a one-line summary with the machine.
"""

import argparse
import contextlib
import gc
import glob
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork.data import pipeline, records, transforms  # noqa: E402
from klassterfork.data.runtime import allocator  # noqa: E402
from klassterfork.data.spec import EvalData, TrainData  # noqa: E402

CLIP_LEN, CROP, BATCH, SHORT_SIDE = 16, 112, 8, 128
REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = REPO.parent / "shared" / "data" / "videos"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def resize_short(image, short_side):
    import cv2

    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode(image, quality):
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_video(path):
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def real_videos(directory, min_frames):
    """(path, frames at short side 128) for every decodable video."""
    out = []
    for path in sorted(Path(directory).rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        try:
            frames = decode_video(path)
        except Exception as exc:  # corrupted files are part of the corpus
            print(f"  skip {path.name}: {type(exc).__name__}")
            continue
        if len(frames) >= min_frames:
            out.append((path, [resize_short(f, SHORT_SIDE) for f in frames]))
    return out


def synthetic_videos(num_videos, num_frames, seed=0):
    rng = np.random.default_rng(seed)
    videos = []
    for v in range(num_videos):
        base = rng.integers(0, 256, (SHORT_SIDE // 8, 171 // 8 + 1, 3)).astype(np.uint8)
        base = np.kron(base, np.ones((8, 8, 1), np.uint8))[:SHORT_SIDE, :171]
        frames = [np.roll(base, 2 * t, axis=1) for t in range(num_frames)]
        videos.append((Path(f"synthetic_{v}"), frames))
    return videos


def write_records(videos, out_dir, quality, copies, num_shards=4):
    serialized = []
    for label, (path, frames) in enumerate(videos):
        jpegs = [encode(f, quality) for f in frames]
        h, w = frames[0].shape[:2]
        serialized.append(
            records.write(
                video_id=path.stem,
                frames=jpegs,
                labels=[label],
                fps=25.0,
                height=h,
                width=w,
                source=str(path),
            )
        )
    items = serialized * copies
    paths = []
    for s in range(num_shards):
        p = os.path.join(out_dir, records.shard_name("bench", s, num_shards))
        with tf.io.TFRecordWriter(p) as writer:
            for item in items[s::num_shards]:
                writer.write(item)
        paths.append(p)
    return paths


def source_dataset(paths, seed=0, buffer_size=None):
    ds = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed)
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=buffer_size),
        cycle_length=len(paths),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.shuffle(256, seed=seed + 1).repeat().enumerate()


def _clip_indices(index, example):
    key = tf.stack([tf.constant(0, tf.int64), tf.cast(index, tf.int64)])
    return transforms.random_clip_indices(example["num_frames"], key, clip_len=CLIP_LEN)


def bound_dataset(paths, buffer_size=None):
    def fn(index, serialized):
        example = records.parse(serialized)
        encoded = tf.gather(example["frames"], _clip_indices(index, example))
        # Videos differ in size: keep one pixel per frame so clips batch.
        return pipeline.decode_frames(encoded)[:, 0, 0, 0]

    ds = source_dataset(paths, buffer_size=buffer_size).map(
        fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def bound_clip_dataset(paths):
    """The bound plus what any clip pipeline must add: the 112^2 window of
    each decoded frame (fixed at the top-left: no random draw), stacked into
    a clip and batched (the bound keeps one pixel a frame)."""
    def fn(index, serialized):
        example = records.parse(serialized)
        encoded = tf.gather(example["frames"], _clip_indices(index, example))
        return pipeline.decode_frames(encoded, tf.constant([0, 0, CROP, CROP]))

    ds = source_dataset(paths).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def _crop_flip_float(frames, index):
    key = tf.stack([tf.constant(1, tf.int64), tf.cast(index, tf.int64)])
    seeds = tf.random.experimental.stateless_split(key, num=2)
    clip = tf.image.stateless_random_crop(frames, [CLIP_LEN, CROP, CROP, 3], seeds[0])
    flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
    clip = tf.cond(flip, lambda: tf.reverse(clip, [2]), lambda: clip)
    return tf.cast(clip, tf.float32) / 255.0


def garden_dataset(paths):
    def fn(index, serialized):
        example = records.parse(serialized)
        encoded = tf.gather(example["frames"], _clip_indices(index, example))
        frames = tf.map_fn(
            lambda c: tf.io.decode_jpeg(c, channels=3),
            encoded,
            fn_output_signature=tf.uint8,
        )
        return _crop_flip_float(frames, index)

    ds = source_dataset(paths).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def all_frames_dataset(paths):
    def fn(index, serialized):
        example = records.parse(serialized)
        frames = tf.map_fn(
            lambda c: tf.io.decode_jpeg(c, channels=3),
            example["frames"],
            fn_output_signature=tf.uint8,
        )
        frames = tf.gather(frames, _clip_indices(index, example))
        return _crop_flip_float(frames, index)

    ds = source_dataset(paths).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def eval_bound_dataset(paths, num_clips):
    def fn(serialized):
        example = records.parse(serialized)
        indices = transforms.even_clip_indices(
            example["num_frames"], clip_len=CLIP_LEN, num_clips=num_clips
        )
        unique, _ = tf.unique(tf.reshape(indices, [-1]))
        frames = pipeline.decode_frames(tf.gather(example["frames"], unique))
        return tf.shape(frames)[0]

    ds = tf.data.TFRecordDataset(paths).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(1).prefetch(tf.data.AUTOTUNE)


class CacheEvictor:
    """While active, evicts `paths` from the page cache every `interval` s."""

    def __init__(self, paths, interval=0.02):
        self.paths, self.interval = paths, interval
        self.stop = threading.Event()
        self.thread = None

    def evict(self):
        for path in self.paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    def __enter__(self):
        self.evict()

        def loop():
            while not self.stop.wait(self.interval):
                self.evict()

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(iterator_fn, seconds, warmup, with_cpu=False):
    """Items per second of an iterable of batches (first `warmup` skipped).

    With `with_cpu`, also the process CPU seconds per item (all threads),
    which other processes' load disturbs much less than the wall clock.
    """
    gc.collect()  # finish the previous measurement's iterator threads
    it = iterator_fn()
    for _ in range(warmup):
        next(it)
    count, start, cpu = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        count += int(batch)
    rate = count / (time.perf_counter() - start)
    cpu_per_item = (cpu_seconds() - cpu) / max(count, 1)
    del it
    return (rate, cpu_per_item) if with_cpu else rate


def batches(ds, limit=None):
    def gen():
        passes = 0
        while True:
            for batch in ds:
                first = batch[0] if isinstance(batch, tuple) else batch
                yield first.shape[0]
            passes += 1
            if limit is not None and passes >= limit:
                return

    return gen


def _pyav_clip(args):
    path, start, seed = args
    import av

    rng = np.random.default_rng(seed)
    clip = []
    with av.open(str(path)) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i >= start:
                clip.append(resize_short(f.to_ndarray(format="rgb24"), SHORT_SIDE))
            if len(clip) == CLIP_LEN:
                break
    while len(clip) < CLIP_LEN:
        clip.append(clip[-1])
    clip = np.stack(clip)
    y = rng.integers(0, clip.shape[1] - CROP + 1)
    x = rng.integers(0, clip.shape[2] - CROP + 1)
    clip = clip[:, y : y + CROP, x : x + CROP]
    if rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    return clip.astype(np.float32) / 255.0


def measure_pyav(videos, seconds, workers=2):
    counts = {p: len(frames) for p, frames in videos}
    paths = list(counts)
    rng = np.random.default_rng(0)

    def tasks():
        i = 0
        while True:
            p = paths[rng.integers(len(paths))]
            start = int(rng.integers(0, max(counts[p] - CLIP_LEN, 0) + 1))
            yield (p, start, i)
            i += 1

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.imap(_pyav_clip, tasks(), chunksize=1)
        for _ in range(2 * workers):
            next(results)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(results)
            count += 1
        rate = count / (time.perf_counter() - start)
        pool.terminate()
    return rate



def train_spec(**options):
    """The benchmarked train spec: 16 x 112^2 clips, batch 8, flips keeping
    labels (half the clips), seed 0, plus `options`."""
    return TrainData.from_flat(clip_len=CLIP_LEN, crop_size=CROP, batch_size=BATCH,
                               seed=0, flip="keep_labels", **options)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", help="existing record shards (glob); else built here"
    )
    parser.add_argument(
        "--videos",
        default=str(DEFAULT_VIDEOS),
        help="real videos to convert (default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="batches skipped")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="round-robin rounds per train pipeline (best kept)",
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument(
        "--copies",
        type=int,
        default=8,
        help="times each video is repeated in the shards",
    )
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--no-pyav", action="store_true")
    parser.add_argument("--no-cache", action="store_true",
                        help="evict the shards from the page cache while measuring")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="glibc malloc for every row: as kf-train sets it "
                        "(data/runtime/allocator.py) or glibc's defaults (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.malloc == "tuned":
        print(allocator.describe(allocator.tune_for_records()))
    else:
        print(allocator.describe({}))
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {command}")
    machine = (
        f"{platform.node()} {platform.machine()} "
        f"{platform.processor() or 'cpu?'} nproc={os.cpu_count()} "
        f"affinity={len(os.sched_getaffinity(0))} tf={tf.__version__}"
    )
    print(f"machine: {machine}")

    tmp = tempfile.TemporaryDirectory(prefix="kf_bench_")
    videos = []
    if args.files:
        paths = sorted(glob.glob(args.files))
        data = f"files {args.files} ({len(paths)} shards)"
    else:
        if Path(args.videos).is_dir():
            videos = real_videos(args.videos, CLIP_LEN)
        if videos:
            data = (
                f"{len(videos)} real videos from {args.videos}, short side "
                f"{SHORT_SIDE}, JPEG q{args.quality}, x{args.copies} copies"
            )
        else:
            videos = synthetic_videos(8, 64)
            data = f"8 synthetic videos x 64 frames, short side {SHORT_SIDE}"
        paths = write_records(videos, tmp.name, args.quality, args.copies)
    print(f"data: {data}" + (" (read from disk: page cache evicted every 20 ms)"
                             if args.no_cache else ""))

    results = {}
    ours = pipeline.train_dataset(paths, train_spec())
    ours_u8 = pipeline.train_dataset(paths, train_spec(standardize="none"))
    ours_scale = pipeline.train_dataset(paths, train_spec(crop_scale=(0.8, 1.0)))
    candidates = {
        "ours": ours,
        "ours_u8": ours_u8,
        "ours_scale": ours_scale,
        "bound": bound_dataset(paths),
        "bound_unbuf": bound_dataset(paths, buffer_size=0),
        "bound_clip": bound_clip_dataset(paths),
        "garden": garden_dataset(paths),
        "all_frames": all_frames_dataset(paths),
    }
    # Round-robin rounds, best of each: on a shared machine the load of
    # other processes only ever slows a measurement down.
    # A fresh iterator each time: a live one keeps prefetching in the
    # background and would hand the next round a full buffer.
    rounds = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, ds in candidates.items():
            with CacheEvictor(paths) if args.no_cache else contextlib.nullcontext():
                rate, cpu_per_clip = measure(
                    batches(ds), args.seconds, args.warmup, with_cpu=True
                )
            rounds[name].append(rate)
            cpu[name].append(cpu_per_clip * 1e3)
    for name in candidates:
        results[name] = max(rounds[name])
        cpu[name] = min(cpu[name])
        spread = ", ".join(f"{x:.1f}" for x in rounds[name])
        print(
            f"train {name:>10}: {results[name]:8.1f} clips/s, CPU "
            f"{cpu[name]:6.2f} ms/clip (rounds: {spread})"
        )
    if videos and not args.no_pyav and not args.files:
        results["pyav"] = measure_pyav(videos, args.seconds)
        print(f"train {'pyav':>10}: {results['pyav']:8.1f} clips/s (2 processes)")
    ratios = {k: results["ours"] / v for k, v in results.items() if k != "ours"}
    print("ratios ours/x: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    ratios_u8 = {k: results["ours_u8"] / results[k]
                 for k in ("bound", "bound_unbuf", "bound_clip", "garden")}
    print(
        "ratios ours_u8/x: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios_u8.items())
    )
    cpu_ratios = {k: cpu[k] / cpu["ours"] for k in cpu if k != "ours"}
    print(
        "CPU-time ratios x/ours (>1: ours cheaper): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ratios.items())
    )

    eval_line = ""
    if not args.no_eval:
        for num_clips, num_crops in ((25, 1), (10, 3)):
            bound = measure(
                batches(eval_bound_dataset(paths, num_clips)), args.seconds, 2
            )
            # float views (per-frame standardized on the CPU) and uint8 views
            # (the model standardizes), each whole and in chunks of 10 views.
            for mode, chunk in (("per_frame", None), ("none", None), ("none", 10)):
                ds = pipeline.eval_dataset(paths, EvalData.from_flat(
                    clip_len=CLIP_LEN, crop_size=CROP, num_clips=num_clips,
                    num_crops=num_crops, batch_size=1, standardize=mode,
                    views_per_chunk=chunk))
                rate = measure(batches(ds), args.seconds, 2)
                if chunk:  # batches are chunks: videos = chunks / chunks per video
                    rate /= -(-num_clips * num_crops // chunk)
                name = f"{mode}" + (f" chunks of {chunk}" if chunk else "")
                print(
                    f"eval {num_clips}x{num_crops} {name:>20}: {rate:6.2f} videos/s, "
                    f"unique-frame decode bound {bound:6.2f} videos/s, ratio "
                    f"{rate / bound:.2f}"
                )
                eval_line += (f" eval{num_clips}x{num_crops}[{name}] "
                              f"{rate:.2f}/{bound:.2f} v/s")
    summary = (
        f"SUMMARY train 16x112^2 b8 malloc {args.malloc}{' no page cache' if args.no_cache else ''} "
        f"(best of {args.rounds} x "
        f"{args.seconds:g} s): ours {results['ours']:.1f} clips/s; "
        + ", ".join(f"{k} {results[k]:.1f} (x{ratios[k]:.2f})" for k in ratios)
        + "; ours_u8/bound "
        + f"{ratios_u8['bound']:.2f}"
        + ", ours_u8/bound_unbuf "
        + f"{ratios_u8['bound_unbuf']:.2f}"
        + ", ours_u8/bound_clip "
        + f"{ratios_u8['bound_clip']:.2f}"
        + ", ours_u8/garden "
        + f"{ratios_u8['garden']:.2f}"
        + "; CPU ms/clip "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        + f";{eval_line} | {machine} | {data}"
    )
    print(summary)
    tmp.cleanup()


if __name__ == "__main__":
    main()
