"""The bundled synthetic action dataset: real video files, told apart by motion.

Eight classes that no single frame can separate: an object moves left to
right, right to left, up or down, rotates clockwise or anticlockwise, grows or
shrinks. Shapes, colours, textured backgrounds, sizes, speeds, start
positions and per-frame noise are random; every video is drawn from
`numpy.random.default_rng([seed, video_id])`, so a seed gives the same files
whatever the number of workers.

Sizes are chosen for the demo recipe (12-frame clips every 3rd frame, so a
clip spans the whole 2-3 s video; a random crop of 80-100 % of the frame
resized to 48 px): objects span 28-40 % of the frame height on a
low-contrast texture, rotating objects 56-68 %; a clip moves an object
45-65 % of the frame or turns it 170-360 degrees, at most 30 degrees between
sampled frames; rotation classes use only the triangle, arrow and L-shape,
so that angle stays below half of any shape's rotational symmetry and the
direction is unambiguous.

Why rotating objects are larger: rotation is the one class whose direction
cannot be read from the sum of local motions (the two ends of a turning
shape move in opposite directions; growth changes the area, translation
moves everything one way), so the model has to compare motions at places
on either side of the object's centre. At 28-40 % of a 48 px frame the
object covers about two cells of the 6x6 stage-3 map of the demo
R(2+1)D, and the demo model did not even fit the training set's
directions (seed 1: clockwise 55/60, anticlockwise 24/60 train videos);
at 44-56 % seeds 1-4 reached 100 / 98.3 / 94.2 / 100 % (seed 3:
anticlockwise 12/15), at 56-68 % (now) 100 / 100 / 98.3 / 100 %, every
class >= 14/15 (BENCHMARKS.md, "Demo training").

Output (SSv2 style):
    {out}/videos/<id>.mp4              H.264 yuv420p (or VP9 .webm)
    {out}/train.json, validation.json  [{"id", "label", "template",
                                         "placeholders"}]
    {out}/labels.json                  {template without brackets: "index"}
    {out}/labels.txt                   "index,name" lines
    {out}/flip_map.json                horizontal-flip label map
"""

import dataclasses
import math
import multiprocessing
import os
import re

import av
import cv2
import numpy as np
import tqdm

from klassterfork.files import write_json_atomic, write_text_atomic


@dataclasses.dataclass(frozen=True)
class MotionClass:
    """One class: an SSv2-style template and the motion that draws it.

    Attributes:
        template: str. With `[something]` where the shape name goes.
        kind: str. "translate", "rotate" or "scale".
        direction: tuple. (dx, dy) unit step for "translate" (image axes,
            y down); (+1,) clockwise / (-1,) anticlockwise for "rotate";
            (+1,) grow / (-1,) shrink for "scale".
    """

    template: str
    kind: str
    direction: tuple


CLASSES = (
    MotionClass("Moving [something] from left to right", "translate", (1, 0)),
    MotionClass("Moving [something] from right to left", "translate", (-1, 0)),
    MotionClass("Moving [something] up", "translate", (0, -1)),
    MotionClass("Moving [something] down", "translate", (0, 1)),
    MotionClass("Rotating [something] clockwise", "rotate", (1,)),
    MotionClass("Rotating [something] anticlockwise", "rotate", (-1,)),
    MotionClass("[Something] growing", "scale", (1,)),
    MotionClass("[Something] shrinking", "scale", (-1,)),
)


def label_name(template):
    """SSv2's label key: the template with its brackets removed."""
    return re.sub(r"\[(.*?)\]", r"\1", template)


LABEL_NAMES = tuple(label_name(c.template) for c in CLASSES)

# A horizontal flip swaps these; every other class keeps its label.
FLIP_PAIRS = (
    ("Moving something from left to right", "Moving something from right to left"),
    ("Rotating something clockwise", "Rotating something anticlockwise"),
)


def flip_label_map(label_names=LABEL_NAMES):
    """Label index after a horizontal flip, per class.

    Args:
        label_names: sequence of str; index = class id.

    Returns:
        list of int: `flip_label_map(n)[i]` is the class of flipped class `i`
        (itself unless `FLIP_PAIRS` pairs it).
    """
    index = {name: i for i, name in enumerate(label_names)}
    out = list(range(len(label_names)))
    for a, b in FLIP_PAIRS:
        if a in index and b in index:
            out[index[a]], out[index[b]] = index[b], index[a]
    return out


def _polygon(points):
    return np.asarray(points, dtype=np.float64)


def _ellipse(aspect, n=24):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), aspect * np.sin(t)], axis=1)


# Unit-size outlines (about [-1, 1]^2). No circle: rotation must show.
SHAPES = {
    "square": _polygon([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]),
    "triangle": _polygon([(0, -1), (0.95, 0.8), (-0.95, 0.8)]),
    "cross": _polygon(
        [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
         (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]
    ),
    "ellipse": _ellipse(0.5),
    "arrow": _polygon(
        [(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75),
         (0.2, 0.3), (-1, 0.3)]
    ),
    "L-shape": _polygon(
        [(-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)]
    ),
}
SHAPE_NAMES = tuple(SHAPES)
# Rotation classes use shapes with little or no rotational symmetry: a square
# or cross turned 36 degrees looks the same as one turned back 54 degrees.
ROTATION_SHAPES = ("triangle", "arrow", "L-shape")


def _background(rng, height, width):
    """Textured background: smooth colour noise plus fine grain, float32."""
    base = rng.uniform(40, 215, size=3)
    coarse = rng.normal(0, 1, size=(max(2, height // 10), max(2, width // 10), 3))
    coarse = cv2.resize(coarse.astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 1, size=(height, width, 3)).astype(np.float32)
    image = base + rng.uniform(10, 22) * coarse + rng.uniform(3, 7) * grain
    return image.astype(np.float32), base


def _object_colour(rng, background_mean):
    """A colour at least 90 away (L2, RGB) from the background's mean."""
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background_mean) > 90:
            return colour
    return 255.0 - background_mean


# Half-size of an object / frame height (the outlines span about [-1, 1]^2);
# see the module docstring for why rotating objects are drawn larger.
OBJECT_SIZE = (0.14, 0.2)
ROTATION_SIZE = (0.28, 0.34)


def _trajectory(motion, rng, num_frames, height, width):
    """Per-frame centre (x, y), angle (rad) and half-size (px)."""
    t = np.linspace(0.0, 1.0, num_frames)
    angle = np.full(num_frames, rng.uniform(0, 2 * np.pi))
    low, high = ROTATION_SIZE if motion.kind == "rotate" else OBJECT_SIZE
    size = np.full(num_frames, rng.uniform(low, high) * height)
    margin = size[0] + 2
    cx = np.full(num_frames, rng.uniform(margin, width - margin))
    cy = np.full(num_frames, rng.uniform(margin, height - margin))
    if motion.kind == "translate":
        dx, dy = motion.direction
        extent = width if dx else height
        travel = rng.uniform(0.45, 0.65) * extent
        travel = min(travel, extent - 2 * margin)
        start = margin + rng.uniform(0, max(0.0, extent - 2 * margin - travel))
        path = start + travel * t
        if dx:
            cx = path if dx > 0 else extent - path
        else:
            cy = path if dy > 0 else extent - path
    elif motion.kind == "rotate":
        # 7-10 degrees a frame: a clip sampled every 3rd frame turns 21-30
        # degrees between samples, under the 60 degrees at which a triangle
        # (the most symmetric rotation shape) would look like turning back.
        # (Every 4th frame, 28-40 degrees, was valid too but the small demo
        # model told the directions apart on only some seeds.)
        step = math.radians(rng.uniform(7.0, 10.0)) * motion.direction[0]
        angle = angle + step * np.arange(num_frames)
    elif motion.kind == "scale":
        small = rng.uniform(0.06, 0.08) * height
        big = rng.uniform(0.17, 0.2) * height
        lo, hi = (small, big) if motion.direction[0] > 0 else (big, small)
        size = lo * (hi / lo) ** t
        margin = big + 2
        cx[:] = rng.uniform(margin, width - margin)
        cy[:] = rng.uniform(margin, height - margin)
    else:
        raise ValueError(f"unknown motion kind {motion.kind!r}")
    jitter = rng.normal(0, 0.3, size=(2, num_frames))
    return cx + jitter[0], cy + jitter[1], angle, size


def render_video(class_index, rng, *, num_frames, height=120, width=160):
    """Draws one video of class `class_index`.

    Args:
        class_index: int, index into `CLASSES`.
        rng: `numpy.random.Generator`; the only source of randomness.
        num_frames: int.
        height, width: int. Frame size.

    Returns:
        (frames, info): uint8 [T, H, W, 3] RGB, and a dict with the shape
        name and the drawn per-frame centres `cx`, `cy` (float [T]).
    """
    if not 0 <= class_index < len(CLASSES):
        raise ValueError(
            f"`class_index` must be in [0, {len(CLASSES)}). Received: {class_index}"
        )
    motion = CLASSES[class_index]
    names = ROTATION_SHAPES if motion.kind == "rotate" else SHAPE_NAMES
    shape_name = names[rng.integers(len(names))]
    outline = SHAPES[shape_name]
    background, mean = _background(rng, height, width)
    colour = _object_colour(rng, mean)
    cx, cy, angle, size = _trajectory(motion, rng, num_frames, height, width)
    noise_sigma = rng.uniform(2.0, 6.0)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    shift = 4  # sub-pixel vertices: fixed point with 4 fractional bits
    for i in range(num_frames):
        c, s = math.cos(angle[i]), math.sin(angle[i])
        # y points down, so a growing angle turns the shape clockwise.
        rot = np.array([[c, -s], [s, c]])
        pts = outline @ rot.T * size[i] + (cx[i], cy[i])
        pts = np.round(pts * (1 << shift)).astype(np.int32)
        image = background.copy()
        cv2.fillPoly(image, [pts], colour.tolist(), cv2.LINE_AA, shift)
        image += rng.normal(0, noise_sigma, size=image.shape).astype(np.float32)
        np.clip(image, 0, 255, out=image)
        frames[i] = image
    return frames, {"shape": shape_name, "cx": cx, "cy": cy}


# name -> (encoder, extension, options). One thread, and for x264 no
# macroblock tree / lookahead: with them, libx264 (PyAV 18 wheel) gave
# different bytes for the same frames from one run to the next.
CODECS = {
    "h264": ("libx264", ".mp4",
             {"crf": "18", "preset": "fast", "threads": "1",
              "x264-params": "no-mbtree=1:rc-lookahead=0"}),
    "vp9": ("libvpx-vp9", ".webm",
            {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4",
             "threads": "1"}),
}


def write_video(path, frames, *, fps, codec="h264"):
    """Encodes uint8 [T, H, W, 3] RGB frames to `path` (atomically).

    Args:
        path: str. Output file; its extension should match the codec.
        frames: uint8 [T, H, W, 3], H and W even (yuv420p).
        fps: int. Frame rate.
        codec: str. "h264" (mp4) or "vp9" (webm). Defaults to "h264".
    """
    if codec not in CODECS:
        raise ValueError(f"`codec` must be one of {sorted(CODECS)}. Received: {codec=}")
    encoder, ext, options = CODECS[codec]
    tmp = f"{path}.tmp{ext}"
    with av.open(tmp, "w") as container:
        stream = container.add_stream(encoder, rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


def _make_one(job):
    """Worker task: render and encode one video; returns its annotation."""
    video_id, class_index, cfg = job
    rng = np.random.default_rng([cfg["seed"], int(video_id)])
    seconds = rng.uniform(cfg["min_seconds"], cfg["max_seconds"])
    num_frames = max(2, int(round(seconds * cfg["fps"])))
    frames, info = render_video(
        class_index, rng, num_frames=num_frames,
        height=cfg["height"], width=cfg["width"],
    )
    ext = CODECS[cfg["codec"]][1]
    path = os.path.join(cfg["out"], "videos", f"{video_id}{ext}")
    write_video(path, frames, fps=cfg["fps"], codec=cfg["codec"])
    template = CLASSES[class_index].template
    return {
        "id": video_id,
        "label": template.replace("[something]", info["shape"]).replace(
            "[Something]", info["shape"].capitalize()
        ),
        "template": template,
        "placeholders": [info["shape"]],
    }


def _balanced_labels(rng, count):
    """`count` labels cycling over the classes, shuffled: balanced to +-1."""
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    return labels.tolist()


def _write_json(path, data):
    write_json_atomic(path, data, indent=1)


def generate(
    out,
    *,
    num_train=480,
    num_val=120,
    seed=0,
    fps=12,
    height=120,
    width=160,
    min_seconds=2.0,
    max_seconds=3.0,
    codec="h264",
    workers=None,
    progress=True,
):
    """Writes the synthetic dataset to `out` (see the module docstring).

    Args:
        out: str. Output folder (created).
        num_train, num_val: int. Videos per split. Defaults to 480 / 120.
        seed: int. Same seed, same files. Defaults to 0.
        fps: int. Defaults to 12.
        height, width: int, even. Defaults to 120 x 160.
        min_seconds, max_seconds: float. Length range. Defaults to 2-3 s.
        codec: str. "h264" (.mp4) or "vp9" (.webm). Defaults to "h264".
        workers: int or None. Processes; None = all CPUs, 1 = in-process.
        progress: bool. Show a tqdm bar. Defaults to True.

    Returns:
        dict: split name -> list of annotation dicts.
    """
    if height % 2 or width % 2 or height < 16 or width < 16:
        raise ValueError(
            "`height` and `width` must be even and >= 16 (yuv420p). "
            f"Received: {height=}, {width=}"
        )
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(
            f"Expected 0 < min_seconds <= max_seconds. Received: {min_seconds=}, "
            f"{max_seconds=}"
        )
    if codec not in CODECS:
        raise ValueError(f"`codec` must be one of {sorted(CODECS)}. Received: {codec=}")
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    cfg = dict(out=os.fspath(out), seed=seed, fps=fps, height=height, width=width,
               min_seconds=min_seconds, max_seconds=max_seconds, codec=codec)
    splits = {"train": num_train, "validation": num_val}
    jobs, first_id = {}, 1
    for code, (split, count) in enumerate(splits.items()):
        labels = _balanced_labels(np.random.default_rng([seed, 0, code]), count)
        jobs[split] = [(str(first_id + i), c, cfg) for i, c in enumerate(labels)]
        first_id += count
    all_jobs = [j for split_jobs in jobs.values() for j in split_jobs]
    workers = workers or os.cpu_count() or 1
    bar = tqdm.tqdm(total=len(all_jobs), desc="synthetic", unit="video",
                    disable=not progress)
    results = {}
    if workers == 1 or len(all_jobs) < 2:
        for job in all_jobs:
            results[job[0]] = _make_one(job)
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(all_jobs))) as pool:
            for entry in pool.imap_unordered(_make_one, all_jobs, chunksize=4):
                results[entry["id"]] = entry
                bar.update()
    bar.close()
    annotations = {}
    for split, split_jobs in jobs.items():
        annotations[split] = [results[job[0]] for job in split_jobs]
        _write_json(os.path.join(out, f"{split}.json"), annotations[split])
    _write_json(os.path.join(out, "labels.json"),
                {name: str(i) for i, name in enumerate(LABEL_NAMES)})
    lines = "".join(f"{i},{name}\n" for i, name in enumerate(LABEL_NAMES))
    write_text_atomic(os.path.join(out, "labels.txt"), lines)
    swaps = {a: b for a, b in FLIP_PAIRS} | {b: a for a, b in FLIP_PAIRS}
    _write_json(os.path.join(out, "flip_map.json"), {
        # The first two keys follow SSv2's augmentation_mappings.json.
        "left/right": swaps,
        "left/right agnostic": [n for n in LABEL_NAMES if n not in swaps],
        "flip_label_map": flip_label_map(LABEL_NAMES),
    })
    return annotations
