"""Inference on raw video files: decode, the model's eval views, average.

The library behind `kf-predict` and `kf-gradcam`, and the way to classify a
video from Python:

    from klassterfork.evaluation import inference

    model, transform, names = inference.load_setup("exp/stage0/model.keras")
    probs = inference.predict_video("clip.mp4", model, transform)
    for index, name, p in inference.top_k(probs, names, 5):
        print(f"{p:.3f} -> {name}")

`load_setup` reads the model and the evaluation transform of its run's
config (`datasets.val`, found beside the model: `stageN/model.keras` ->
`../config.resolved.json`, stage N; or `config=`). `predict_video` decodes
the file with PyAV (`data/video.decode_video`: display rotation applied,
short side resized to the converter's `short_side`, resampled to its `fps`,
cut at its `max_frames`, as read from the split's manifest), takes
`num_clips` evenly spaced clips x `num_crops` spatial crops with the same
pure functions the record pipeline uses (`data/transforms.even_clip_indices`,
`spatial_crop_windows`, `crop_and_resize`, `standardize`), and averages the
softmax of every view. Views go through the model `batch_size` at a time
(default: the config's `datasets.val.views_per_chunk`, else 8) and are
standardized per batch, so memory is bounded whatever the number of views.

One difference from `pipeline.eval_dataset` remains: training records hold
JPEG-compressed frames, here the decoded frames go to the model directly
(a JPEG round trip changes pixels by a few levels; predictions agree).

TensorFlow and Keras are imported inside the functions, so importing this
module (and the CLIs over it) stays cheap.
"""

import collections
import glob
import json
import os
import re

import numpy as np

# The options of an eval block (`data/spec.py` `EvalData`) that inference
# does not reproduce: a block that sets one is refused, not half-applied.
NOT_REPRODUCED = ("num_segments", "new_length", "modality")
DECODE_KEYS = ("short_side", "fps", "max_frames")


class PredictError(ValueError):
    """A setup problem (model, config, labels) that stops every prediction."""


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
                "pass the config (--config, or config=: the run's config.resolved.json or "
                "its hjson)")
    transform = eval_transform(load_stage(config, stage_index))
    for key, value in (("short_side", short_side), ("fps", fps),
                       ("max_frames", max_frames)):
        if value is not None:
            transform["decode"][key] = value
    try:
        if model_path.endswith(".onnx"):  # kf-export --format onnx: it standardizes
            from klassterfork.evaluation import onnx_runner

            model = onnx_runner.OnnxClassifier(model_path)
            transform["norm"] = onnx_runner.NO_NORM
        else:
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


VideoResult = collections.namedtuple("VideoResult", "probs views num_frames")
VideoResult.__doc__ = """What `run_video` used and found for one video.

Attributes:
    probs: float64 (num_classes,). Mean softmax over the views; sums to 1.
    views: uint8 (V, T, H, W, C). The eval views, before standardization.
    num_frames: int. Frames decoded from the file.
"""


def predict_video(path, model, transform, *, batch_size=None):
    """Class probabilities of one video file: the mean softmax of its views.

    Args:
        path: str. A video file PyAV reads.
        model: `keras.Model`, (B, T, H, W, C) -> (B, num_classes) logits
            (as from `load_setup`).
        transform: dict. The eval transform (as from `load_setup` or
            `eval_transform`).
        batch_size: int or None. Views per forward pass. Defaults to None:
            `transform["views_per_chunk"]`, else 8.

    Returns:
        float64 (num_classes,), sums to 1.

    Raises:
        VideoDecodeError: the file cannot be decoded (names the file).
        ValueError: `batch_size` is not a positive int.
    """
    return run_video(path, model, transform, batch_size=batch_size).probs


def run_video(path, model, transform, *, batch_size=None):
    """`predict_video`, also returning the views and the frame count.

    Returns:
        `VideoResult(probs, views, num_frames)`.
    """
    batch_size = views_per_batch(transform, batch_size)
    views, num_frames = decode_views(path, transform)
    # Standardized per batch: at most `batch_size` float views at a time.
    probs = predict_views(model, views, batch_size=batch_size, norm=transform["norm"])
    return VideoResult(probs, views, num_frames)


def views_per_batch(transform, batch_size=None):
    """The views per forward pass: `batch_size`, else the config's
    `views_per_chunk`, else 8.

    Raises:
        ValueError: the chosen value is not a positive int.
    """
    if batch_size is None:
        batch_size = transform.get("views_per_chunk") or 8
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("the views per forward pass (batch_size / "
                         "datasets.val.views_per_chunk) must be a positive int. "
                         f"Received: {batch_size!r}")
    return batch_size


def top_k(probs, names, k):
    """[(index, name, probability)] of the k largest, ties by lower index."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), names[i], float(probs[i])) for i in order]


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
            f"folder asks for stage {stage_index}. Pass the config explicitly (--config)."
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
    datasets = stage.get("datasets") or {}
    block = datasets.get("val") or datasets.get("test")
    if not block:
        raise PredictError(
            "the config has no `datasets.val` (or `datasets.test`) block to "
            f"take the evaluation transform from. Received datasets: {sorted(datasets)}"
        )
    missing = [k for k in ("clip_len", "crop_size") if k not in block]
    if missing:
        raise PredictError(f"datasets.val: `{missing[0]}` is required.")
    spec = _eval_spec(block)
    sampling, views, norm = spec.sampling, spec.views, spec.standardize
    view = {"clip_len": sampling.clip_len, "crop_size": views.crop_size,
            "num_clips": views.num_clips, "num_crops": views.num_crops,
            "frame_step": sampling.frame_step, "resize_short_side": views.resize_short_side,
            "short_video": sampling.short_video}
    manifest = _manifest(block)
    settings = manifest.get("settings") or {}
    names = manifest.get("label_names")
    return {
        "view": view,
        "norm": {"mode": norm.standardize, "mean": norm.mean, "std": norm.std},
        "decode": {k: settings.get(k) for k in DECODE_KEYS},
        "label_names": list(names) if isinstance(names, list) else None,
        "views_per_chunk": views.views_per_chunk,
    }


def _eval_spec(block):
    """The block's `EvalData` (one clip, one crop, batch 1 where unset);
    raises `PredictError` on an option inference does not reproduce."""
    from klassterfork.config import options as opts
    from klassterfork.data.spec import EvalData

    accepted = opts.accepted(EvalData)
    refused = sorted(k for k in block if k in NOT_REPRODUCED or k not in accepted)
    if refused:
        # A transform option inference does not reproduce must not be
        # dropped silently: predictions would not match evaluation.
        applied = [k for k in accepted if k not in NOT_REPRODUCED]
        raise PredictError(
            f"datasets.val.{refused[0]}: inference does not apply this option of "
            f"the eval pipeline. It applies: {', '.join(applied)}")
    filled = {**block, "num_clips": block.get("num_clips") or 1,
              "num_crops": block.get("num_crops") or 1,
              "batch_size": block.get("batch_size") or 1}
    try:
        return opts.from_flat(EvalData, filled)
    except ValueError as err:
        raise PredictError(f"datasets.val: {err}") from None


def check_model(model, view):
    """Raises `PredictError` when the model cannot take these views."""
    if len(model.inputs) != 1 or isinstance(model.output, (dict, list, tuple)):
        raise PredictError(
            f"inference needs a single-input, single-output classifier. Received: "
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
                f"(V, {', '.join(map(str, want))}): pass the run's config "
                "(--config, or config=)")


def decode_views(path, transform):
    """Decodes a video file and returns (uint8 views (V, T, H, W, C), frames).

    Raises:
        VideoDecodeError: the file cannot be decoded (names the file).
    """
    from klassterfork.data.conversion.video import decode_video

    decoded = decode_video(path, **transform["decode"])
    return video_views(decoded.frames, **transform["view"]), len(decoded.frames)


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


def softmax(logits):
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
