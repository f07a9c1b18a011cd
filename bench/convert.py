"""Conversion speed: kf-convert against ffmpeg's CLI on the same videos.

    python bench/convert.py [--videos GLOB] [--workers 2] [--rounds 3]
                            [--short-side 128] [--beam]

Each round times, on the same videos, back to back (order alternating
between rounds):

  ffmpeg   `ffmpeg -i V -vf scale=... -q:v 3 OUT/%05d.jpg` per video, the
           short side scaled to --short-side, `--workers` videos at a time
           (what a shell script with xargs -P would do).
  kf       `kf-convert --csv LIST --workers N --short-side S` as a fresh
           process (start-up, reading, decoding, JPEG, records, manifest),
           JPEG quality 90.
  beam     (with --beam) the same with `--runner beam` on Beam's
           DirectRunner, N processes in multi-processing mode.

Reported per video: wall seconds (the run's wall time / videos) and CPU
seconds (user + system of every child process / videos), the median over
rounds, and the ratio to ffmpeg (ffmpeg / kf: above 1 means kf is faster).
The JPEG bytes per frame of both are printed too, so that a speed-up cannot
come from a lower quality. Needs an `ffmpeg` binary (Debian: apt-get install
ffmpeg); exits with a message without one. Default videos: every decodable
video of ../shared/data/videos (14; decord/corrupted.mp4 left out).
"""

import argparse
import concurrent.futures
import glob
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VIDEOS = os.path.join(os.path.dirname(ROOT), "shared", "data", "videos", "*",
                              "*")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    """(wall seconds, children's CPU seconds) of fn()."""
    cpu, wall = children_cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, children_cpu() - cpu


def ffmpeg_scale(short_side):
    # The short side to `short_side`, the long side by aspect ratio (even).
    s = short_side
    return f"scale='if(lte(iw,ih),{s},-2)':'if(lte(iw,ih),-2,{s})'"


def run_ffmpeg(videos, out, workers, short_side):
    def one(i):
        folder = os.path.join(out, f"{i:03d}")
        os.makedirs(folder)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", videos[i],
                        "-vf", ffmpeg_scale(short_side), "-q:v", "3",
                        os.path.join(folder, "%05d.jpg")], check=True,
                       capture_output=True)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(videos))))


def run_kf(csv, out, workers, short_side, beam=False):
    cmd = [sys.executable, "-m", "klassterfork.cli.convert", "--csv", csv,
           "--out", out, "--workers", str(workers), "--short-side", str(short_side),
           "--quiet", "--num-shards", str(workers)]
    if beam:
        cmd += ["--runner", "beam"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)


def jpeg_bytes_per_frame(folder, pattern):
    sizes = [os.path.getsize(f) for f in glob.glob(os.path.join(folder, pattern),
                                                   recursive=True)]
    return sum(sizes) / max(1, len(sizes)), len(sizes)


def record_bytes_per_frame(out):
    import json

    manifest = json.load(open(os.path.join(out, "train.manifest.json")))
    size = sum(os.path.getsize(os.path.join(out, s["file"]))
               for s in manifest["shards"])
    return size / manifest["counts"]["frames"], manifest["counts"]["frames"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=DEFAULT_VIDEOS, help="glob")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--beam", action="store_true", help="also time --runner beam")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("bench/convert.py: no ffmpeg binary on PATH (Debian: apt-get install "
              "ffmpeg); nothing measured.", file=sys.stderr)
        return 1
    videos = sorted(v for v in glob.glob(args.videos)
                    if os.path.isfile(v) and "corrupted" not in v)
    if not videos:
        print(f"bench/convert.py: no video matches {args.videos}", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="kf_bench_convert_")
    csv = os.path.join(tmp, "list.csv")
    with open(csv, "w") as f:
        f.writelines(f"{v},x\n" for v in videos)
    names = ["ffmpeg", "kf"] + (["beam"] if args.beam else [])
    times = {name: [] for name in names}
    sizes = {}
    try:
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                out = os.path.join(tmp, f"{name}{r}")
                if name == "ffmpeg":
                    fn = lambda: run_ffmpeg(videos, out, args.workers,  # noqa: E731
                                            args.short_side)
                else:
                    fn = lambda: run_kf(csv, out, args.workers,  # noqa: E731
                                        args.short_side, beam=name == "beam")
                wall, cpu = timed(fn)
                times[name].append((wall / len(videos), cpu / len(videos)))
                sizes[name] = (jpeg_bytes_per_frame(out, "*/*.jpg") if name == "ffmpeg"
                               else record_bytes_per_frame(out))
                shutil.rmtree(out)
                print(f"round {r} {name}: wall {wall:.2f} s, cpu {cpu:.2f} s",
                      file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base_wall = statistics.median(w for w, _ in times["ffmpeg"])
    base_cpu = statistics.median(c for _, c in times["ffmpeg"])
    print(f"{len(videos)} videos, {args.workers} parallel jobs, short side "
          f"{args.short_side}, {args.rounds} rounds (median)")
    print("| run | wall s/video | CPU s/video | throughput vs ffmpeg (wall) | "
          "CPU vs ffmpeg | bytes/frame (frames) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        per_frame, frames = sizes[name]
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {base_wall / wall:.2f}x | "
              f"{base_cpu / cpu:.2f}x | {per_frame:.0f} ({frames}) |")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}, python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
