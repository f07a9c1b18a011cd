"""What a dataset block may contain: the typed spec, declared once.

`TrainData` (a `datasets.train` block) and `EvalData` (`datasets.val`,
`datasets.val_<name>`) are frozen dataclasses of a few nested groups —
where the records are (`Source`), which frames a clip takes (`Sampling`),
crops (`Crop` / `Views`), standardization (`Standardize`), augmentation
(`Augment`, `Mixing`) and how records are read (`Reading`). Each field
carries its type, default, accepted values and a one-line doc
(`config.options.option`); everything else derives from the fields:

- config validation with located errors (`TrainData.from_block`),
- the pipelines (`pipeline.train_dataset(files, spec)` reads the groups),
- the builders' accepted keys, `--print-config`'s filled-in blocks
  (`options.to_flat`), inference's eval views, preflight's defaults,
- the option table in docs/options.md (`python -m klassterfork.data.spec`).

The config block is flat (`clip_len: 16`, `crop: random`); flat names are
unique over the groups. Adding an option is one field here plus the
transform that reads it (docs/design.md, "Add a dataset option").
"""

import dataclasses
import inspect
import sys

import tensorflow as tf

from klassterfork.config import options as opts
from klassterfork.config.options import OptionError, group, option
from klassterfork.data import transforms
from klassterfork.data.transforms import augment
from klassterfork.data.transforms.crops import check_scale

MODALITIES = ("rgb", "flow")
CROPS = ("random", "multi_scale", "random_resized", "centre")
SHARD_POLICIES = ("auto", "file", "data")
FLIPS = (False, True, "manifest", "ssv2_tdn", "keep_labels")
RAND_AUGMENT_OPS = {"default": augment.DEFAULT_OPS, "increasing": augment.INCREASING_OPS}
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a split's records are (read by the trainer, not the pipeline)."""

    dir: str = option(None, "folder of `{split}-*-of-*.tfrecord` shards and "
                      "`{split}.manifest.json`", kind="str")
    split: str = option(None, "the split's name in `dir` (train, validation, ...)",
                        kind="str")
    files: object = option(None, "glob pattern or list of shard paths (instead of "
                           "`dir` + `split`)", kind="str_or_list")
    num_examples: int = option(None, "videos in the split, when the manifest gives none",
                               kind="int", minimum=1)
    class_embeddings: str = option(None, "`.npy` class-name embeddings (zero-shot: "
                                   "targets in train, cosine scoring in val)", kind="str")
    service: dict = option(None, "read through the tf.data service (train only): "
                           "`{address: grpc://host:port, ...}`", kind="dict")

    def __post_init__(self):
        opts.check_fields(self)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which frames a clip takes."""

    clip_len: int = option(None, "frames per clip (T)", kind="int", minimum=1,
                           required=True)
    frame_step: object = option(1, "stride between frames; a list draws one per clip "
                                "(fps jitter, train only)", kind="int_or_list", minimum=1)
    num_segments: int = option(None, "TSN segment sampling: clip_len = num_segments * "
                               "new_length", kind="int", minimum=1)
    new_length: int = option(1, "consecutive frames per TSN segment (TDN: 5)",
                             kind="int", minimum=1)
    short_video: str = option("repeat", "a video shorter than the clip: repeat the last "
                              "frame or loop", choices=transforms.SHORT_VIDEO_MODES,
                              kind="str")

    def __post_init__(self):
        opts.check_fields(self)
        if self.num_segments is not None:
            if self.num_segments * self.new_length != self.clip_len:
                raise OptionError(
                    "clip_len", "`clip_len` must equal num_segments * new_length with "
                    f"segment sampling. Received: clip_len={self.clip_len}, "
                    f"num_segments={self.num_segments}, new_length={self.new_length}")
        elif self.new_length != 1:
            raise OptionError("new_length", "`new_length` needs `num_segments`. "
                                            f"Received: new_length={self.new_length}")

    @property
    def step_choices(self):
        """The fps-jitter choices (tuple), or None for one fixed step."""
        if isinstance(self.frame_step, (list, tuple)):
            return tuple(self.frame_step)
        return None


@dataclasses.dataclass(frozen=True)
class Crop:
    """One crop window per training clip."""

    crop_size: int = option(None, "output side (H = W)", kind="int", minimum=1,
                            required=True)
    crop: str = option("random", "random (see crop_scale), multi_scale (TSN), "
                       "random_resized (Inception) or centre", kind="str", choices=CROPS)
    crop_scale: object = option(None, "(low, high): window side = s * short side, "
                                "resized to crop_size; null: a crop_size window",
                                kind="pair")

    def __post_init__(self):
        opts.check_fields(self)
        if self.crop_scale is not None:
            _as_option_error("crop_scale", check_scale, self.crop_scale)


@dataclasses.dataclass(frozen=True)
class Views:
    """Evaluation views: `num_clips` evenly spaced clips x `num_crops` crops."""

    crop_size: int = option(None, "output side (H = W)", kind="int", minimum=1,
                            required=True)
    num_clips: int = option(None, "clips per video", kind="int", minimum=1, required=True)
    num_crops: int = option(None, "centre crop (1) or three crops along the long side (3)",
                            kind="int", choices=(1, 3), required=True)
    resize_short_side: int = option(None, "crop as if frames were resized to this short "
                                    "side first", kind="int", minimum=1)
    views_per_chunk: int = option(None, "evaluate K views at a time (memory bounded by "
                                  "batch_size x K clips)", kind="int", minimum=1)
    flatten_views: bool = option(False, "yield single views (B, T, H, W, C)", kind="bool")

    def __post_init__(self):
        opts.check_fields(self)
        if self.views_per_chunk is None:
            return
        if self.views_per_chunk > self.num_views:
            raise OptionError(
                "views_per_chunk", "`views_per_chunk` must be at most num_clips * "
                f"num_crops = {self.num_views} (more would only add padding views). "
                f"Received: views_per_chunk={self.views_per_chunk}")
        if self.flatten_views:
            raise OptionError(
                "views_per_chunk", "`views_per_chunk` and `flatten_views` cannot be "
                "combined (single views are already the smallest unit). Received: "
                f"views_per_chunk={self.views_per_chunk}, flatten_views=True")

    @property
    def num_views(self):
        return self.num_clips * self.num_crops


@dataclasses.dataclass(frozen=True)
class Standardize:
    """How uint8 pixels become model input."""

    standardize: str = option("per_frame", "per_frame, per_clip, mean_std (+ mean, std), "
                              "unit, symmetric, or none (uint8 to the model)",
                              kind="str", choices=transforms.STANDARDIZE_MODES)
    mean: object = option(None, "per-channel means in [0, 1] (mean_std)", kind="numbers")
    std: object = option(None, "per-channel stds in [0, 1] (mean_std)", kind="numbers")

    def __post_init__(self):
        opts.check_fields(self)
        # Fail now, not inside the graph (e.g. mean_std without mean / std).
        _as_option_error("standardize", transforms.check_standardize, self.standardize,
                         mean=self.mean, std=self.std)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Per-clip augmentation: flips and time reversal with label maps,
    RandAugment, random erasing, repeated views."""

    flip: object = option(False, "false: none; manifest/true: the manifest's label map; "
                          "ssv2_tdn; keep_labels; or a list (label after flipping, -1 = "
                          "never)")
    flip_prob: float = option(0.5, "flip probability (independent policy)", kind="number",
                              minimum=0)
    reverse_label_map: object = option(None, "time reversal with a label map (-1 = never "
                                       "reverse the class)", kind="numbers")
    reverse_prob: float = option(0.0, "time-reversal probability", kind="number", minimum=0)
    augment_policy: str = option("independent", "independent (flip_prob, reverse_prob) or "
                                 "uniform (20BN SSv2 baseline)", kind="str",
                                 choices=transforms.AUGMENT_POLICIES)
    rand_augment: object = option(None, "clip-level RandAugment: {num_layers, magnitude, "
                                  "magnitude_std, ops: default|increasing}", kind="dict_or_bool")
    random_erasing: object = option(None, "one box per clip on all frames: {prob, mode, "
                                    "max_count} (float output only)", kind="dict_or_bool")
    repeated_views: int = option(1, "k augmented views of each video in a row (batch_size "
                                 "a multiple of k)", kind="int", minimum=1)

    def __post_init__(self):
        opts.check_fields(self)
        if not (self.flip in FLIPS or _is_label_map(self.flip)):
            raise OptionError(
                "flip", "`flip` must be false (no flips), true or 'manifest' (the "
                "manifest's label map), 'ssv2_tdn' (TDN's SSv2 policy: all flip, 3 pairs "
                "swap), 'keep_labels' (flip, labels unchanged: appearance datasets) or a "
                f"list (label after flipping, -1 = never). Received: {self.flip!r}")
        for name in ("flip_prob", "reverse_prob"):
            prob = getattr(self, name)
            if not 0.0 <= prob <= 1.0:
                raise OptionError(name, f"`{name}` must be in [0, 1]. Received: "
                                        f"{name}={prob!r}")

    @property
    def flip_label_map(self):
        """The resolved label map (list), or None (flips keep their labels)."""
        if self.flip in ("manifest", "ssv2_tdn") or self.flip is True:
            raise ValueError(f"`flip`={self.flip!r} needs the dataset's label map: resolve "
                             "it with `TrainData.with_flip_map(label_map)` first.")
        return list(self.flip) if _is_label_map(self.flip) else None

    @property
    def flip_probability(self):
        return 0.0 if self.flip in (False, None) else float(self.flip_prob)


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Batch mixup / cutmix with soft labels (per replica batch)."""

    mixup_alpha: float = option(0.0, "mixup Beta(alpha, alpha); 0 = off", kind="number",
                                minimum=0)
    cutmix_alpha: float = option(0.0, "cutmix Beta(alpha, alpha); 0 = off", kind="number",
                                 minimum=0)
    mix_prob: float = option(1.0, "chance to mix a batch", kind="number", minimum=0)
    mix_switch_prob: float = option(0.5, "chance of cutmix when both are on",
                                    kind="number", minimum=0)
    label_smoothing: float = option(0.0, "smoothing of the mixed one-hots", kind="number",
                                    minimum=0)
    num_classes: int = option(None, "classes of the soft labels (default: the manifest's)",
                              kind="int", minimum=1)

    def __post_init__(self):
        opts.check_fields(self)

    @property
    def mixes(self):
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


@dataclasses.dataclass(frozen=True)
class Reading:
    """How the train records are read: order, shuffle, parallelism, bad records."""

    seed: int = option(None, "seeds shard order, shuffle and every random transform "
                       "(default: train_loop.seed)", kind="int", minimum=0)
    shuffle_buffer: int = option(256, "block size of the example shuffle (0 = off)",
                                 kind="int", minimum=0)
    cycle_length: int = option(8, "shards read at once", kind="int", minimum=1)
    num_parallel_calls: int = option(AUTOTUNE, "parallel clip decoders (-1 = autotune)",
                                     kind="int", minimum=-1)
    repeat: bool = option(True, "repeat forever", kind="bool")
    drop_remainder: bool = option(True, "drop the last partial batch", kind="bool")
    shard_policy: str = option("auto", "how workers split the data: auto, file or data",
                               kind="str", choices=SHARD_POLICIES)
    max_bad_records: int = option(None, "bad records tolerated (default: 0.1 % of the "
                                  "records, at least 1)", kind="int", minimum=0)

    def __post_init__(self):
        opts.check_fields(self)


@dataclasses.dataclass(frozen=True)
class TrainData:
    """A `datasets.train` block: random clips, one random crop per clip."""

    batch_size: int = option(None, "clips per batch (the global batch in a config)",
                             kind="int", minimum=1, required=True)
    modality: str = option("rgb", "rgb, or flow (stacked flow pairs, two-stream)",
                           kind="str", choices=MODALITIES)
    source: Source = group(Source, "where the records are")
    sampling: Sampling = group(Sampling, "which frames a clip takes")
    crop: Crop = group(Crop, "the crop window")
    standardize: Standardize = group(Standardize, "pixels to model input")
    augment: Augment = group(Augment, "flips, reversal, RandAugment, erasing")
    mixing: Mixing = group(Mixing, "mixup / cutmix")
    reading: Reading = group(Reading, "record order, shuffle, parallelism")

    def __post_init__(self):
        opts.check_fields(self)
        views = self.augment.repeated_views
        if self.batch_size % views:
            raise OptionError(
                "batch_size", "`batch_size` must be a multiple of `repeated_views` (each "
                f"batch holds whole groups of views). Received: batch_size="
                f"{self.batch_size}, repeated_views={views}")
        self.rand_augment_kwargs()
        self.random_erasing_kwargs()

    from_flat = classmethod(lambda cls, **options: opts.from_flat(cls, options))

    @classmethod
    def from_block(cls, block, source, key, **extra):
        """The spec of a config block; errors are `ConfigError`s located at
        `key.option` (file, line). `extra` options fill in what the block
        leaves out (seed, num_classes)."""
        return from_block(cls, block, source, key, **extra)

    def with_flip_map(self, label_map):
        """The spec with `flip: manifest / true / ssv2_tdn` resolved to a list."""
        return dataclasses.replace(self, augment=dataclasses.replace(
            self.augment, flip=list(label_map)))

    def rand_augment_kwargs(self, run=False):
        """`augment.rand_augment` keyword arguments, or None (checked; `run`:
        also by one eager call)."""
        value = self.augment.rand_augment
        if value not in (None, False) and self.modality != "rgb":
            raise OptionError("rand_augment", "`rand_augment` applies to RGB clips only. "
                                              f"Received: modality={self.modality!r}")
        if isinstance(value, dict) and isinstance(value.get("ops"), str):
            if value["ops"] not in RAND_AUGMENT_OPS:
                raise OptionError("rand_augment", "`rand_augment.ops` must be one of "
                                  f"{list(RAND_AUGMENT_OPS)}. Received: {value['ops']!r}")
            value = {**value, "ops": RAND_AUGMENT_OPS[value["ops"]]}
        return _augment_kwargs("rand_augment", value, augment.rand_augment,
                               lambda: tf.zeros([1, 4, 4, 3], tf.uint8), run)

    def random_erasing_kwargs(self, run=False):
        """`augment.random_erasing` keyword arguments, or None (checked; `run`:
        also by one eager call)."""
        value = self.augment.random_erasing
        if value not in (None, False) and self.standardize.standardize == "none":
            raise OptionError(
                "random_erasing", "`random_erasing` fills boxes with standardized noise "
                "and needs float output; it cannot run with standardize='none'. "
                f"Received: random_erasing={value!r}, standardize='none'")
        return _augment_kwargs("random_erasing", value, augment.random_erasing,
                               lambda: tf.zeros([1, 1, 4, 4, 3]), run)

    @property
    def may_flip(self):
        """Known before tracing: no flip ops when no flip can happen."""
        return self.augment.augment_policy == "uniform" or self.augment.flip_probability > 0

    @property
    def may_reverse(self):
        if self.augment.augment_policy == "uniform":
            return self.augment.reverse_label_map is not None
        return self.augment.reverse_prob > 0


@dataclasses.dataclass(frozen=True)
class EvalData:
    """A `datasets.val` / `datasets.val_<name>` block: every video once, as
    `num_clips x num_crops` views."""

    batch_size: int = option(None, "videos (or chunks) per batch", kind="int", minimum=1,
                             required=True)
    modality: str = option("rgb", "rgb, or flow (stacked flow pairs, two-stream)",
                           kind="str", choices=MODALITIES)
    num_parallel_calls: int = option(AUTOTUNE, "parallel video decoders (-1 = autotune)",
                                     kind="int", minimum=-1)
    source: Source = group(Source, "where the records are")
    sampling: Sampling = group(Sampling, "which frames a clip takes")
    views: Views = group(Views, "clips x crops per video")
    standardize: Standardize = group(Standardize, "pixels to model input")

    def __post_init__(self):
        opts.check_fields(self)
        if self.sampling.step_choices is not None:
            raise OptionError("frame_step", "`frame_step` must be an integer >= 1 in "
                              "evaluation (one fixed step). Received: "
                              f"frame_step={self.sampling.frame_step!r}")

    from_flat = classmethod(lambda cls, **options: opts.from_flat(cls, options))

    @classmethod
    def from_block(cls, block, source, key, **extra):
        """As `TrainData.from_block`."""
        return from_block(cls, block, source, key, **extra)

    @property
    def channels(self):
        return 3 if self.modality == "rgb" else 2


def spec_class(role):
    """`TrainData` for the `train` role, `EvalData` for val / val_<name>."""
    return TrainData if role == "train" else EvalData


def from_block(cls, block, source, key, **extra):
    from klassterfork.config.loader import ConfigError

    try:
        return opts.from_flat(cls, {**extra, **block} if extra else block)
    except OptionError as err:
        raise ConfigError(source, f"{key}.{err.option}", _without_name(err)) from None


def _without_name(err):
    """The message without a leading "`name` " (the located key says it)."""
    text = str(err)
    prefix = f"`{err.option}` "
    return text[len(prefix):] if text.startswith(prefix) else text


def _is_label_map(value):
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _as_option_error(name, fn, *args, **kwargs):
    """Calls a transform's own check; its ValueError becomes an OptionError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        raise OptionError(name, str(err)) from None


def _augment_kwargs(name, value, fn, example, run):
    """`value` (dict, true = defaults, null / false = off) -> dict or None.

    Its names are checked against `fn`'s signature (no TensorFlow op: a
    config is checked before a multi-worker strategy starts the runtime);
    with `run`, `fn(example(), seed, **value)` also runs once eagerly, so
    bad values fail when the pipeline is built, not inside the graph.
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    try:
        inspect.signature(fn).bind(None, None, **value)
        if run:
            fn(example(), tf.constant([0, 0]), **value)
    except TypeError as err:
        raise OptionError(name, f"`{name}`: {err}. Received: {name}={value!r}") from None
    return value


def options_markdown():
    """docs/options.md: the option tables of both roles."""
    return (
        "# Dataset options\n\n"
        "Generated from `klassterfork/data/spec.py` (`python -m klassterfork.data.spec > "
        "docs/options.md`); a test checks it is current. A config's dataset block is "
        "flat: `datasets.train: {dir: ..., split: train, clip_len: 16, crop_size: 112, "
        "batch_size: 8}`.\n\n"
        "## `datasets.train` (`TrainData`)\n\n" + opts.markdown_table(TrainData) + "\n\n"
        "## `datasets.val`, `datasets.val_<name>` (`EvalData`)\n\n"
        + opts.markdown_table(EvalData) + "\n")


if __name__ == "__main__":
    sys.stdout.write(options_markdown())
