"""Forward + backward clips/s of every model family on this CPU.

    python bench/models.py [--batch 2] [--steps 3] [--models R2Plus1D18 ...]

Each model does one SGD `train_on_batch` (forward, backward, update) on random
clips; the first step (tracing / compilation) is not timed, the next
`--steps` are. Baselines are measured in the same run, on the same input,
batch and threads: PyTorch CPU implementations written independently of
klassterfork (`references/torch_reference.py`: torchvision's R(2+1)D-18,
ResNet-50 TSN, VideoMAE ViT-S), eager, float32, SGD step. Both use
`--threads` intra-op threads (default 1). The table gives
Keras clips/s, PyTorch clips/s and their ratio (> 1: Keras is faster).
Results go to stdout (copy them to BENCHMARKS.md). Input sizes are reduced
from the training sizes so the whole run takes a few minutes on 2 cores.

    KERAS_BACKEND=jax python bench/models.py --accelerator [--steps 20]

The accelerator comparison of issue 4 (needs no TensorFlow: the GPU machine
has none): R(2+1)D-18 at 16x112^2, batch 32, and ViT-B at 16x224^2, batch 8,
trained with Keras on the JAX backend in mixed_bfloat16 (`train_on_batch`,
jit-compiled, SGD with momentum, inputs already on the device), against the
same networks in PyTorch with bf16 autocast (`references/torch_reference.py`:
torchvision's R(2+1)D-18 layout in channels_last_3d; VideoMAE's ViT-B with
`F.scaled_dot_product_attention`, eager). MFU = 3 x forward FLOPs (XLA's cost
analysis of the Keras forward) x clips/s / peak bf16 FLOP/s (`--peak-tflops`,
else looked up from the device name). `--tiny` shrinks both cases to check the
code path on a CPU.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--accelerator" in sys.argv:
    os.environ.setdefault("KERAS_BACKEND", "jax")
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

    from references import torch_reference as ref

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


# ---- accelerator comparison (issue 4) -------------------------------------
# name -> (builder, kwargs, batch, torch baseline)
ACCELERATOR_CASES = {
    "R2Plus1D18": ("R2Plus1D18", dict(input_shape=(16, 112, 112, 3)), 32, "r2plus1d"),
    "VideoViT-B": ("VideoViT", dict(variant="B", num_frames=16, image_size=224), 8, "vit_b"),
}
TINY_CASES = {
    "R2Plus1D18": ("R2Plus1D18", dict(input_shape=(4, 32, 32, 3)), 2, "r2plus1d"),
    "VideoViT-B": ("VideoViT", dict(variant="B", depth=2, num_frames=4, image_size=32),
                   2, "vit_b"),
}
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by device-name substring.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0,
                    "H100": 989.4, "A100": 312.0, "L40S": 362.1}


def peak_tflops(device_name, override):
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def keras_accelerator(name, case, steps):
    """(seconds per step, forward FLOPs per step) of Keras/JAX in bf16."""
    import jax

    builder, kwargs, batch, _ = case
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build(builder, num_classes=NUM_CLASSES, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.normal(size=(batch,) + tuple(model.input.shape[1:]))
                       .astype("float32"))
    y = jax.device_put(rng.integers(0, NUM_CLASSES, size=batch))

    def forward(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs)[0]

    lowered = jax.jit(forward).lower(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], x)
    # On a GPU the compiled module calls cuDNN / cuBLAS as custom calls, which
    # XLA's cost analysis counts as 0 FLOPs (the H100 run printed 0.3
    # GFLOP/clip for R(2+1)D-18), so the MFU there uses the PyTorch twin's
    # FlopCounterMode count instead (see accelerator_main).
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    seconds = timed(lambda: model.train_on_batch(x, y), steps)
    return seconds, flops


class _SDPAAttention:
    """VideoMAE attention forward with torch's fused attention kernel."""

    @staticmethod
    def forward(self, x):
        import torch
        from torch.nn import functional as F

        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def torch_accelerator(case, steps, device):
    """Seconds per step of the PyTorch baseline with bf16 autocast."""
    import torch

    from references import torch_reference as ref

    builder, kwargs, batch, kind = case
    if kind == "r2plus1d":
        frames, size = kwargs["input_shape"][0], kwargs["input_shape"][1]
        net = ref.VideoResNet("r2plus1d", NUM_CLASSES)
        memory_format = torch.channels_last_3d
    else:
        frames, size = kwargs["num_frames"], kwargs["image_size"]
        tokens = (frames // 2) * (size // 16) ** 2
        net = ref.VideoMAEViT(NUM_CLASSES, dim=768, depth=kwargs.get("depth", 12),
                              num_heads=12, num_tokens=tokens)
        for module in net.modules():
            if isinstance(module, ref.Attention):
                module.forward = _SDPAAttention.forward.__get__(module)
        memory_format = torch.contiguous_format
    net = net.to(device).train()
    if kind == "vit_b":
        net.pos_embed = net.pos_embed.to(device)
    net = net.to(memory_format=memory_format)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, frames, size, size, device=device).to(
        memory_format=memory_format)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        if device_type == "cuda":
            torch.cuda.synchronize()

    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16):
        with FlopCounterMode(display=False) as counter:
            net(x)
    return timed(step, steps), float(counter.get_total_flops())


def accelerator_main(args):
    import jax

    device = jax.devices()[0]
    name = getattr(device, "device_kind", str(device))
    peak = peak_tflops(name, args.peak_tflops)
    try:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_version = torch.__version__
    except ImportError:
        torch_device = torch_version = None
    print(f"device: {name} ({device.platform}); jax {jax.__version__}, Keras "
          f"{keras.__version__} ({keras.backend.backend()} backend), torch "
          f"{torch_version} on {torch_device}; peak bf16 {peak} TFLOP/s")
    print(f"{args.steps} timed steps after 1 warm-up (compilation), SGD momentum .9, "
          f"{NUM_CLASSES} classes, bf16")
    print("| model | input, batch | Keras/JAX clips/s | MFU | PyTorch AMP clips/s "
          "| Keras / PyTorch |")
    print("|---|---|---|---|---|---|")
    cases = TINY_CASES if args.tiny else ACCELERATOR_CASES
    for label in [m for m in args.models or cases if m in cases]:
        case = cases[label]
        seconds, flops = keras_accelerator(label, case, args.steps)
        batch = case[2]
        rate = batch / seconds
        base = torch_flops = None
        if torch_device:
            base, torch_flops = torch_accelerator(case, args.steps, torch_device)
        if device.platform == "gpu" and torch_flops:
            flops = torch_flops
        mfu = (3 * flops / seconds / (peak * 1e12)) if peak and flops == flops else None
        kwargs = case[1]
        shape = kwargs.get("input_shape") or (
            kwargs["num_frames"], kwargs["image_size"], kwargs["image_size"], 3)
        row = (f"| {label} | {'x'.join(map(str, shape))}, {batch} | {rate:.1f} | "
               + (f"{mfu:.1%}" if mfu is not None else "-") + " |")
        if torch_device:
            row += f" {batch / base:.1f} | {base / seconds:.2f} |"
        else:
            row += " - | - |"
        row += f"  (forward {flops / batch / 1e9:.1f} GFLOP/clip)"
        print(row, flush=True)
        keras.backend.clear_session()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=None,
                        choices=sorted(set(CASES) | set(ACCELERATOR_CASES)))
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for TF and torch alike (default 1: on a "
                        "shared, oversubscribed machine torch's OpenMP threads spin "
                        "and lose ~10x at 2 threads, which would flatter Keras)")
    parser.add_argument("--accelerator", action="store_true",
                        help="the GPU comparison: Keras/JAX bf16 vs PyTorch AMP")
    parser.add_argument("--tiny", action="store_true",
                        help="with --accelerator: tiny sizes, to check on a CPU")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="with --accelerator: peak bf16 TFLOP/s for MFU")
    args = parser.parse_args(argv)
    if args.accelerator:
        return accelerator_main(args)
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
    for name in [m for m in args.models or CASES if m in CASES]:
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
