"""Forward + backward clips/s of every model family on this CPU.

    python bench/models.py [--batch 2] [--steps 3] [--models R2Plus1D18 ...]

Each model does one SGD `train_on_batch` (forward, backward, update) on random
clips; the first step (tracing / compilation) is not timed, the next
`--steps` are. Baselines are measured in the same run, on the same input,
batch and threads: PyTorch CPU implementations written independently of
klassterfork (`tests/models/torch_reference.py`: torchvision's R(2+1)D-18,
ResNet-50 TSN, VideoMAE ViT-S), eager, float32, SGD step. Both use
`--threads` intra-op threads (default 1). The table gives
Keras clips/s, PyTorch clips/s and their ratio (> 1: Keras is faster).
Results go to stdout (copy them to BENCHMARKS.md). Input sizes are reduced
from the training sizes so the whole run takes a few minutes on 2 cores.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from klassterfork import models  # noqa: E402

NUM_CLASSES = 174
# name -> (builder, kwargs, torch baseline or None). Sizes: 8 frames at 112².
CASES = {
    "R2Plus1D18": ("R2Plus1D18", dict(input_shape=(8, 112, 112, 3)), "r2plus1d"),
    "R3D18": ("R3D18", dict(input_shape=(8, 112, 112, 3)), None),
    "MC3_18": ("MC3_18", dict(input_shape=(8, 112, 112, 3)), None),
    "Model3D1": ("Model3D1", dict(input_shape=(8, 84, 84, 3)), None),
    "TSN": ("TSN", dict(temporal="none", num_segments=8,
                        input_shape=(8, 112, 112, 3)), "tsn"),
    "TSM": ("TSN", dict(temporal="tsm", num_segments=8,
                        input_shape=(8, 112, 112, 3)), None),
    "TDN": ("TSN", dict(temporal="tdn", num_segments=8,
                        input_shape=(40, 112, 112, 3)), None),
    "MSN": ("TSN", dict(temporal="msn", num_segments=8,
                        input_shape=(8, 112, 112, 3)), None),
    "VideoViT-S": ("VideoViT", dict(variant="S", num_frames=8, image_size=112),
                   "vit_s"),
}


def timed(step, steps):
    step()  # trace / compile / allocate
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def keras_seconds(name, batch, steps):
    builder, kwargs, _ = CASES[name]
    model = models.build(builder, num_classes=NUM_CLASSES, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch,) + tuple(model.input.shape[1:])).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=batch)
    return timed(lambda: model.train_on_batch(x, y), steps)


def torch_seconds(kind, batch, steps):
    import torch

    from tests.models import torch_reference as ref

    if kind == "r2plus1d":
        net, shape = ref.VideoResNet("r2plus1d", NUM_CLASSES), (batch, 3, 8, 112, 112)
    elif kind == "tsn":
        net, shape = ref.ResNet50TSN(NUM_CLASSES, 8), (batch * 8, 3, 112, 112)
    else:
        net = ref.VideoMAEViT(NUM_CLASSES, num_tokens=4 * 7 * 7)
        shape = (batch, 3, 8, 112, 112)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(shape)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return timed(step, steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for TF and torch alike (default 1: on a "
                        "shared, oversubscribed machine torch's OpenMP threads spin "
                        "and lose ~10x at 2 threads, which would flatter Keras)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None

    print(f"machine: {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}, TF {tf.__version__}, "
          f"Keras {keras.__version__} ({keras.backend.backend()} backend), "
          f"torch {torch_version or 'not installed'}"
          + (f" ({torch.get_num_threads()} threads)" if torch_version else ""))
    print(f"batch {args.batch}, {args.steps} timed SGD steps after 1 warm-up, "
          f"{NUM_CLASSES} classes, float32")
    print("| model | input | Keras clips/s | PyTorch clips/s | Keras / PyTorch |")
    print("|---|---|---|---|---|")
    for name in args.models:
        _, kwargs, baseline = CASES[name]
        seconds = keras_seconds(name, args.batch, args.steps)
        size = kwargs.get("image_size")
        shape = kwargs.get("input_shape") or (kwargs.get("num_frames"), size, size, 3)
        row = f"| {name} | {'x'.join(map(str, shape))} | {args.batch / seconds:.2f} |"
        if baseline and torch_version:
            base = torch_seconds(baseline, args.batch, args.steps)
            row += f" {args.batch / base:.2f} | {base / seconds:.2f} |"
        else:
            row += " - | - |"
        print(row, flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
