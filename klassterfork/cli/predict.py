"""`kf-predict VIDEO [VIDEO...] --model MODEL.keras [--labels labels.txt]`.

Classifies raw video files with a trained model, applying the evaluation
transform of the model's config (`datasets.val`): the video is decoded with
PyAV (`data/video.decode_video`: display rotation applied, short side resized
to the converter's `short_side`, resampled to its `fps`, cut at its
`max_frames`, as read from the split's manifest), then `num_clips` evenly
spaced clips x `num_crops` spatial crops are taken with the same pure
functions the record pipeline uses (`data/transforms.even_clip_indices`,
`spatial_crop_windows`, `crop_and_resize`, `standardize`), and the softmax
of every view is averaged. Views go through the model `--batch-size` at a
time (default: the config's `datasets.val.views_per_chunk`, else 8) and are
standardized per batch, so memory is bounded whatever the number of views.

One difference from `pipeline.eval_dataset` remains: training records hold
JPEG-compressed frames, here the decoded frames go to the model directly
(a JPEG round trip changes pixels by a few levels; predictions agree).

The config is found beside the model (`stageN/model.keras` ->
`../config.resolved.json`, stage N) unless `--config` names one (the run's
`config.resolved.json` or an hjson config).

Output, per video (the SSv2 baseline's layout, one class per line):

    demo.mp4
      0.912 -> Moving something from left to right
      0.041 -> Moving something up
      ...

`--json` prints one JSON document instead. An unreadable video prints
`kf-predict: <file>: <reason>` to stderr and the others go on; the exit
status is 1 when any video failed.
"""

import argparse
import glob
import inspect
import json
import os
import re
import sys

import numpy as np

# The eval keys of a `datasets.val` block that shape the model's input; their
# defaults are read from `pipeline.eval_dataset` (one spelling per fact).
VIEW_KEYS = ("clip_len", "crop_size", "num_clips", "num_crops", "frame_step",
             "resize_short_side", "short_video")
NORM_KEYS = ("standardize", "mean", "std")
# Views per forward pass (the default of --batch-size): bounds memory.
CHUNK_KEYS = ("views_per_chunk",)
DECODE_KEYS = ("short_side", "fps", "max_frames")
# Keys of a val block that do not change what one video's views look like.
IGNORED_KEYS = ("dir", "split", "files", "flip", "num_examples", "batch_size",
                "num_parallel_calls", "with_ids", "flatten_views", "seed")


class PredictError(ValueError):
    """A setup problem (model, config, labels) that stops every prediction."""


def find_config(model_path):
    """The run's resolved config beside a saved model, and the stage index.

    `EXP/stage2/model.keras` -> (`EXP/config.resolved.json`, 2).

    Returns:
        (path or None, int): None when no `config.resolved.json` is there;
        the stage index from the `stage{i}` folder name, -1 (the last stage)
        when the folder has another name.
    """
    folder = os.path.dirname(os.path.abspath(model_path))
    match = re.fullmatch(r"stage(\d+)", os.path.basename(folder))
    index = int(match.group(1)) if match else -1
    for candidate in (os.path.join(os.path.dirname(folder), "config.resolved.json"),
                      os.path.join(folder, "config.resolved.json")):
        if os.path.isfile(candidate):
            return candidate, index
    return None, index


def load_stage(config_path, stage_index=-1):
    """One stage dict of a config (`config.resolved.json` or hjson).

    Raises:
        PredictError: unreadable config, or no such stage.
    """
    from klassterfork.config.loader import ConfigError, load

    try:
        stages, _ = load(config_path)
    except ConfigError as err:
        raise PredictError(f"config error: {err}") from None
    if not -len(stages) <= stage_index < len(stages):
        raise PredictError(
            f"{config_path}: the config has {len(stages)} stage(s); the model's "
            f"folder asks for stage {stage_index}. Pass --config explicitly."
        )
    return stages[stage_index]


def _manifest(block):
    """The split manifest of a dataset block (dir + split, or files), or {}."""
    split = block.get("split")
    if not split:
        return {}
    folders = []
    if block.get("dir"):
        folders.append(block["dir"])
    files = block.get("files")
    if isinstance(files, str):
        files = sorted(glob.glob(files)) or [files]
    for f in files or []:
        folders.append(os.path.dirname(f))
    for folder in folders:
        path = os.path.join(folder, f"{split}.manifest.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return {}


def eval_transform(stage):
    """The evaluation transform of a stage's `datasets.val` block.

    Args:
        stage: dict. A resolved stage (`datasets.val`, else `datasets.test`).

    Returns:
        dict with `view` (kwargs of `video_views`), `norm` (kwargs of
        `transforms.standardize`: mode, mean, std), `decode` (short_side,
        fps, max_frames of the converter, from the split's manifest; None
        where unknown), `label_names` (list or None, from the manifest) and
        `views_per_chunk` (int or None: views per forward pass).

    Raises:
        PredictError: the stage has no val/test dataset.
    """
    from klassterfork.data import pipeline

    datasets = stage.get("datasets") or {}
    block = datasets.get("val") or datasets.get("test")
    if not block:
        raise PredictError(
            "the config has no `datasets.val` (or `datasets.test`) block to "
            f"take the evaluation transform from. Received datasets: {sorted(datasets)}"
        )
    defaults = {
        name: p.default
        for name, p in inspect.signature(pipeline.eval_dataset).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    missing = [k for k in ("clip_len", "crop_size") if k not in block]
    if missing:
        raise PredictError(f"datasets.val: `{missing[0]}` is required.")
    applied = VIEW_KEYS + NORM_KEYS + CHUNK_KEYS
    unknown = sorted(set(block) - set(applied + IGNORED_KEYS))
    if unknown:
        # A transform option kf-predict does not reproduce must not be
        # dropped silently: predictions would not match evaluation.
        raise PredictError(
            f"datasets.val.{unknown[0]}: kf-predict does not apply this option of "
            f"the eval pipeline. It applies: {', '.join(applied)}")
    view = {k: block.get(k, defaults.get(k)) for k in VIEW_KEYS}
    view["num_clips"] = view["num_clips"] or 1
    view["num_crops"] = view["num_crops"] or 1
    norm = {k: block.get(k, defaults.get(k)) for k in NORM_KEYS}
    manifest = _manifest(block)
    settings = manifest.get("settings") or {}
    names = manifest.get("label_names")
    return {
        "view": view,
        "norm": {"mode": norm["standardize"], "mean": norm["mean"], "std": norm["std"]},
        "decode": {k: settings.get(k) for k in DECODE_KEYS},
        "label_names": list(names) if isinstance(names, list) else None,
        "views_per_chunk": block.get("views_per_chunk"),
    }


def video_views(frames, *, clip_len, crop_size, num_clips=1, num_crops=1,
                frame_step=1, resize_short_side=None, short_video="repeat"):
    """The evaluation views of one decoded video (as `pipeline.eval_dataset`).

    `num_clips` evenly spaced clips (`transforms.even_clip_indices`) x
    `num_crops` deterministic crops (`transforms.spatial_crop_windows`), each
    resized to `crop_size`; view `v = clip * num_crops + crop`.

    Args:
        frames: uint8 [N, H, W, 3], or a list of N uint8 [H, W, 3].
        clip_len, crop_size, num_clips, num_crops, frame_step,
            resize_short_side, short_video: as in `pipeline.eval_dataset`.

    Returns:
        uint8 [V, clip_len, crop_size, crop_size, 3], V = num_clips * num_crops.
    """
    from klassterfork.data import transforms

    count = len(frames)
    if count == 0:
        raise ValueError("`frames` must hold at least one frame. Received: 0 frames")
    indices = transforms.even_clip_indices(
        count, clip_len=clip_len, num_clips=num_clips, frame_step=frame_step,
        short_video=short_video,
    ).numpy()
    unique, position = np.unique(indices.reshape(-1), return_inverse=True)
    chosen = np.stack([np.asarray(frames[i], dtype=np.uint8) for i in unique])
    windows = transforms.spatial_crop_windows(
        chosen.shape[1:3], crop_size=crop_size, num_crops=num_crops,
        resize_short_side=resize_short_side,
    ).numpy()
    crops = [transforms.crop_and_resize(chosen, w, crop_size=crop_size).numpy()
             for w in windows]
    shape = (num_clips, clip_len, crop_size, crop_size, 3)
    per_crop = [c[position].reshape(shape) for c in crops]
    return np.stack(per_crop, axis=1).reshape((-1,) + shape[1:])


def model_input(views, norm):
    """uint8 views (V, T, H, W, C) -> the model's input (standardized)."""
    from klassterfork.data import transforms

    return transforms.standardize(views, norm["mode"], mean=norm["mean"],
                                  std=norm["std"])


def softmax(logits):
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict_views(model, inputs, *, batch_size=8, norm=None):
    """Averaged softmax over the views of one video.

    Args:
        model: `keras.Model`, (B, T, H, W, C) -> (B, num_classes) logits.
        inputs: float32 (V, T, H, W, C), standardized views; or uint8
            views with `norm`.
        batch_size: int. Views per forward pass. Defaults to 8.
        norm: dict or None. With `norm` (as from `eval_transform`), each
            batch of views is standardized just before its forward pass, so
            only `batch_size` float views exist at a time (standardization
            is per view, so the result is the same). Defaults to None.

    Returns:
        float64 (num_classes,), sums to 1.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or (
        batch_size < 1
    ):
        raise ValueError("`batch_size` must be a positive int. Received: "
                         f"batch_size={batch_size!r}")

    def batch(i):
        views = inputs[i:i + batch_size]
        return views if norm is None else model_input(views, norm)

    logits = [np.asarray(model(batch(i), training=False))
              for i in range(0, len(inputs), batch_size)]
    return softmax(np.concatenate(logits)).mean(axis=0)


def check_model(model, view):
    """Raises `PredictError` when the model cannot take these views."""
    if len(model.inputs) != 1 or isinstance(model.output, (dict, list, tuple)):
        raise PredictError(
            f"kf-predict needs a single-input, single-output classifier. Received: "
            f"model {model.name!r} with {len(model.inputs)} input(s)")
    shape = tuple(model.inputs[0].shape)
    want = (view["clip_len"], view["crop_size"], view["crop_size"], 3)
    if len(shape) != 5:
        raise PredictError(
            f"the model's input must be (B, T, H, W, C) (one clip per example). "
            f"Received: input shape {shape}")
    for have, need in zip(shape[1:], want):
        if have is not None and have != need:
            raise PredictError(
                f"the model takes input {shape}, the config's eval transform makes "
                f"(V, {', '.join(map(str, want))}): pass the run's config with "
                "--config")


def load_setup(model_path, *, config=None, labels=None, short_side=None, fps=None,
               max_frames=None):
    """Loads the model, its eval transform and its class names.

    Args:
        model_path: str. A `.keras` file.
        config: str or None. The config; None looks beside the model.
        labels: str or None. A class list (`labels.txt`, ...); None takes the
            manifest's names, or class indices.
        short_side, fps, max_frames: override the converter's settings.

    Returns:
        (model, transform, class_names): `transform` as from
        `eval_transform`, with the overrides applied to `decode`.

    Raises:
        PredictError: with the file and the reason.
    """
    import keras

    import klassterfork.models  # noqa: F401  (registers the custom layers)
    from klassterfork.evaluation.class_names import read_class_list

    if not os.path.isfile(model_path):
        raise PredictError(f"{model_path}: model file not found")
    stage_index = -1
    if config is None:
        config, stage_index = find_config(model_path)
        if config is None:
            raise PredictError(
                f"{model_path}: no config.resolved.json beside the model's folder; "
                "pass --config (the run's config.resolved.json or its hjson)")
    transform = eval_transform(load_stage(config, stage_index))
    for key, value in (("short_side", short_side), ("fps", fps),
                       ("max_frames", max_frames)):
        if value is not None:
            transform["decode"][key] = value
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as err:  # noqa: BLE001  keras raises many kinds
        raise PredictError(f"{model_path}: cannot load the model: {err}") from None
    check_model(model, transform["view"])
    num_classes = int(model.output.shape[-1])
    if labels is not None:
        try:
            names = read_class_list(labels)
        except (OSError, ValueError) as err:
            raise PredictError(f"{labels}: cannot read the class list: {err}") from None
    else:
        names = transform["label_names"] or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise PredictError(
            f"{labels or 'the manifest'}: {len(names)} class names for a model with "
            f"{num_classes} outputs")
    return model, transform, names


def decode_views(path, transform):
    """Decodes a video file and returns (uint8 views (V, T, H, W, C), frames).

    Raises:
        VideoDecodeError: the file cannot be decoded (names the file).
    """
    from klassterfork.data.video import decode_video

    decoded = decode_video(path, **transform["decode"])
    return video_views(decoded.frames, **transform["view"]), len(decoded.frames)


def video_inputs(path, transform):
    """Decodes a video file and returns (uint8 views, model inputs, frames).

    Raises:
        VideoDecodeError: the file cannot be decoded (names the file).
    """
    views, num_frames = decode_views(path, transform)
    return views, model_input(views, transform["norm"]), num_frames


def top_k(probs, names, k):
    """[(index, name, probability)] of the k largest, ties by lower index."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), names[i], float(probs[i])) for i in order]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="kf-predict", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--model", required=True, help="a saved model (.keras)")
    p.add_argument("--config", help="config.resolved.json or hjson (default: beside "
                   "the model, ../config.resolved.json)")
    p.add_argument("--labels", help="class list (labels.txt: 'index,name' lines, one "
                   "name per line, or json); default: the manifest's label names")
    p.add_argument("--top-k", type=int, default=5, help="classes to print (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--short-side", type=int, help="decode short side (default: the "
                   "converter's, from the manifest; else the video's own size)")
    p.add_argument("--fps", type=float, help="resample to this rate (default: the "
                   "converter's)")
    p.add_argument("--max-frames", type=int, help="keep at most this many frames "
                   "(default: the converter's)")
    p.add_argument("--batch-size", type=int, default=None, help="views per forward "
                   "pass (default: the config's datasets.val.views_per_chunk, else 8)")
    return p.parse_args(argv)


def main(argv=None):
    """Console entry point; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        print(f"kf-predict: --top-k must be >= 1. Received: {args.top_k}",
              file=sys.stderr)
        return 2
    try:
        model, transform, names = load_setup(
            args.model, config=args.config, labels=args.labels,
            short_side=args.short_side, fps=args.fps, max_frames=args.max_frames)
    except PredictError as err:
        print(f"kf-predict: {err}", file=sys.stderr)
        return 2
    from klassterfork.data.video import VideoDecodeError

    batch_size = args.batch_size
    if batch_size is None:
        batch_size = transform["views_per_chunk"] or 8
    if not isinstance(batch_size, int) or batch_size < 1:
        print(f"kf-predict: --batch-size / datasets.val.views_per_chunk must be a "
              f"positive int. Received: {batch_size!r}", file=sys.stderr)
        return 2
    results, failed = [], 0
    for path in args.videos:
        try:
            views, num_frames = decode_views(path, transform)
        except (VideoDecodeError, ValueError) as err:
            reason = err.reason if isinstance(err, VideoDecodeError) else str(err)
            print(f"kf-predict: {path}: {reason}", file=sys.stderr)
            results.append({"video": path, "ok": False, "error": reason})
            failed += 1
            continue
        # Standardized per batch: at most `batch_size` float views at a time.
        probs = predict_views(model, views, batch_size=batch_size,
                              norm=transform["norm"])
        best = top_k(probs, names, args.top_k)
        results.append({
            "video": path, "ok": True, "num_frames": num_frames,
            "num_views": len(views),
            "top_k": [{"index": i, "label": n, "probability": p} for i, n, p in best],
        })
        if not args.json:
            print(path)
            for _, name, prob in best:
                print(f"  {prob:.3f} -> {name}")
    if args.json:
        print(json.dumps({"model": args.model, "videos": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
