"""tf.data service overhead: the train pipeline's clips/s read locally, and
through `kf-data-service` with 1 and 2 local workers (issue 12).

    python bench/data_service.py [--clips 1200] [--workers-max 2]

Same total cores in every case (the machine's): the local pipeline uses them
all in the reading process; through the service the worker processes decode
and the reading process only receives batches. The ratio service / local is
the service's overhead with the same cores; workers on other machines add
their cores, so the expected figure for W remote workers of C cores is
W * C * (local clips/s per core) * ratio.

Data: synthetic 16-frame 128x171 JPEG videos (tiny_data's motion videos,
enlarged), 16 x 112^2 uint8 clips, batch 8.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from klassterfork.data import pipeline, records
from klassterfork.data.spec import TrainData
from klassterfork.data.runtime import service  # noqa: E402

BATCH = 8


def write_videos(out_dir, num_videos=64, num_shards=8, frames=16):
    rng = np.random.default_rng(0)
    paths = [os.path.join(out_dir, records.shard_name("train", i, num_shards))
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i in range(num_videos):
        video = rng.integers(0, 255, (frames, 128, 171, 3), np.uint8)
        encoded = [tf.io.encode_jpeg(f, quality=90).numpy() for f in video]
        writers[i % num_shards].write(records.write(
            video_id=f"v{i}", frames=encoded, labels=[i % 10], fps=25.0,
            height=128, width=171))
    for w in writers:
        w.close()
    return paths


def make(files, seed=0):
    return pipeline.train_dataset(files, TrainData.from_flat(
        clip_len=16, crop_size=112, batch_size=BATCH, seed=seed, standardize="none",
        shuffle_buffer=64, flip="keep_labels"))


def clips_per_s(ds, clips):
    it = iter(ds)
    for _ in range(3):  # warm-up: graph start, first files, connections
        next(it)
    batches = clips // BATCH
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - start)


def through_service(files, num_workers, clips, log_dir):
    with service.LocalService(num_workers, log_dir) as svc:
        ds = make(files).apply(tf.data.experimental.service.distribute(
            processing_mode="distributed_epoch", service=svc.address,
            job_name=f"bench-{num_workers}"))
        return clips_per_s(ds, clips)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1200)
    parser.add_argument("--workers-max", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="kf_bench_service_") as tmp:
        files = write_videos(tmp)
        local = clips_per_s(make(files), args.clips)
        rows = [("local pipeline (reading process)", local)]
        for w in range(1, args.workers_max + 1):
            rate = through_service(files, w, args.clips, os.path.join(tmp, f"l{w}"))
            rows.append((f"service, {w} local worker(s)", rate))
    print(f"machine: {cores} cores; {args.clips} clips of 16x112x112 uint8, "
          f"batch {BATCH}")
    print("| path | clips/s | ratio to local |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / local:.2f}x |")
    # The projection uses the 1-worker ratio: one worker process against one
    # local process is the like-for-like overhead; more local processes can
    # take a larger share of a machine shared with other work.
    ratio = rows[1][1] / local
    per_core = local / cores
    expected = 4 * 16 * per_core * ratio
    print(f"per core (local): {per_core:.0f} clips/s; expected for 4 remote 16-core "
          f"workers: 4 x 16 x {per_core:.0f} x {ratio:.2f} = {expected:.0f} clips/s "
          "(if the trainer's network and host keep up)")


if __name__ == "__main__":
    main()
