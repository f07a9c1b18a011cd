"""Time to the first batch of a resumed train pipeline, by epochs done.

    python bench/resume.py [--videos DIR] [--copies 16] [--epochs 0 10 60]

Records as in bench/pipeline.py (real videos at short side 128, JPEG q90,
each repeated `--copies` times over 8 shards; generated frames without
videos). For each epoch E, the pipeline is built at
`start_batch = E * steps_per_epoch + steps_per_epoch // 2` (mid-epoch) and
timed to its first batch, against a baseline in the same run:

  ours     `pipeline.train_dataset(..., start_batch=K)` (the record stage
           of data/reading/resume.py: open shards skip by headers, one shuffle
           block read).
  replay   the previous design's cost: the same record stream read from
           the run's first record, throwing away the K * B consumed records
           before parsing (what `ds.skip` on the enumerated stream did).

Files are read from the page cache (the first round warms it), so "replay"
is a lower bound on its cost from storage. The last line is a summary.
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tensorflow as tf  # noqa: E402

import pipeline as bench_pipeline  # noqa: E402  (bench/pipeline.py)
from klassterfork.data import pipeline  # noqa: E402
from klassterfork.data.reading import resume  # noqa: E402

CLIP_LEN, CROP, BATCH = 16, 112, 8


def first_batch_seconds(make):
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def replay(paths, consumed):
    """The old resume: read the stream from its start, drop `consumed`."""
    layout = resume.Layout(pipeline.read_shards(paths), file_seed=0, shuffle_seed=1,
                           cycle_length=8, shuffle_buffer=256)
    ds, _ = resume.records(layout)
    return ds.skip(consumed).take(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", default=str(bench_pipeline.DEFAULT_VIDEOS))
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 10, 60])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    machine = (f"{platform.node()} {platform.machine()} nproc={os.cpu_count()} "
               f"tf={tf.__version__} load={os.getloadavg()[0]:.1f}")
    tmp = tempfile.TemporaryDirectory(prefix="kf_resume_")
    videos = []
    if Path(args.videos).is_dir():
        videos = bench_pipeline.real_videos(args.videos, CLIP_LEN)
    source = f"{len(videos)} real videos"
    if not videos:
        videos = bench_pipeline.synthetic_videos(8, 64)
        source = "8 synthetic videos"
    paths = bench_pipeline.write_records(videos, tmp.name, 90, args.copies, num_shards=8)
    num_records = len(videos) * args.copies
    size = sum(os.path.getsize(p) for p in paths)
    data = (f"{source} x{args.copies} = {num_records} records in 8 shards, "
            f"{size / num_records / 1e3:.0f} kB a record, {size / 1e6:.1f} MB an epoch")
    print(f"data: {data}")
    steps = num_records // BATCH

    def ours(start_batch):
        return pipeline.train_dataset(paths, bench_pipeline.train_spec(),
                                      start_batch=start_batch)

    rows = []
    for epoch in args.epochs:
        start_batch = epoch * steps + steps // 2
        times = {"ours": [], "replay": []}
        for _ in range(args.rounds):
            times["ours"].append(first_batch_seconds(lambda: ours(start_batch)))
            times["replay"].append(
                first_batch_seconds(lambda: replay(paths, start_batch * BATCH)))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((epoch, med))
        print(f"epoch {epoch:3d} (start_batch {start_batch}): ours "
              f"{med['ours']:.2f} s (rounds {', '.join(f'{x:.2f}' for x in times['ours'])}),"
              f" replay {med['replay']:.2f} s "
              f"(rounds {', '.join(f'{x:.2f}' for x in times['replay'])})")
    print("SUMMARY resume time-to-first-batch (median of "
          f"{args.rounds}): " + "; ".join(
              f"epoch {e}: ours {m['ours']:.2f} s, replay {m['replay']:.2f} s"
              for e, m in rows) + f" | {machine} | {data}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
