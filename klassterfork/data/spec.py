"""The options of the train and eval pipelines, checked once.

`TrainSpec.create(**options)` / `EvalSpec.create(**options)` take the keyword
arguments of `pipeline.train_dataset` / `pipeline.eval_dataset` (minus the
files), check every one (errors name the argument, what was received and
what is accepted), normalize them (a frame-step list becomes `step_choices`,
`seed=None` an OS-drawn seed, augment dicts their keyword arguments) and
return a frozen spec, so the pipeline functions read as the stages they
build. The clip options both share are checked by `check_clip_options`.
"""

import dataclasses
import os

import tensorflow as tf

from klassterfork.data.transforms import augment
from klassterfork.data import transforms
from klassterfork.data.transforms.checks import check_choice, check_positive
from klassterfork.data.transforms.crops import check_scale

MODALITIES = ("rgb", "flow")
CROPS = ("random", "multi_scale", "random_resized", "centre")
SHARD_POLICIES = ("auto", "file", "data")
# What keys an example's random draws (see `pipeline.train_dataset`).
EXAMPLE_KEYS = ("position", "record")
RAND_AUGMENT_OPS = {"default": augment.DEFAULT_OPS, "increasing": augment.INCREASING_OPS}


def check_sizes(**sizes):
    for name, value in sizes.items():
        check_positive(value, name)


def check_clip_options(*, clip_len, crop_size, batch_size, frame_step, standardize,
                       mean, std, num_segments, new_length, short_video, modality,
                       frame_step_choices):
    """The checks train and eval share. Returns the frame-step choices
    (tuple) or None."""
    check_sizes(clip_len=clip_len, crop_size=crop_size, batch_size=batch_size,
                new_length=new_length)
    step_choices = None
    if frame_step_choices and isinstance(frame_step, (list, tuple)):
        step_choices = tuple(frame_step)
        transforms.random_frame_step(tf.constant([0, 0], tf.int64), step_choices)
    else:
        check_sizes(frame_step=frame_step)
    if num_segments is not None:
        check_sizes(num_segments=num_segments)
        if num_segments * new_length != clip_len:
            raise ValueError(
                "`clip_len` must equal num_segments * new_length with segment "
                f"sampling. Received: clip_len={clip_len}, "
                f"num_segments={num_segments}, new_length={new_length}"
            )
    elif new_length != 1:
        raise ValueError(
            f"`new_length` needs `num_segments`. Received: new_length={new_length}"
        )
    # Fail now, not inside the graph, on bad options.
    transforms.standardize(tf.zeros([1, 1, 1, 3]), standardize, mean=mean, std=std)
    check_choice(short_video, transforms.SHORT_VIDEO_MODES, "short_video")
    check_choice(modality, MODALITIES, "modality")
    return step_choices


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """`pipeline.train_dataset`'s options, checked (see its docstring).

    Besides the arguments: `step_choices` (tuple or None: fps jitter),
    `seeded` (False when `seed` was None and drawn here).
    """

    clip_len: int
    crop_size: int
    batch_size: int
    frame_step: object = 1
    seed: int = None
    shuffle_buffer: int = 256
    flip_label_map: object = None
    flip_prob: float = 0.5
    standardize: str = "per_frame"
    mean: object = None
    std: object = None
    crop_scale: object = None
    crop: str = "random"
    num_segments: int = None
    new_length: int = 1
    reverse_label_map: object = None
    reverse_prob: float = 0.0
    augment_policy: str = "independent"
    short_video: str = "repeat"
    repeat: bool = True
    drop_remainder: bool = True
    num_parallel_calls: int = tf.data.AUTOTUNE
    cycle_length: int = 8
    start_batch: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    num_classes: int = None
    modality: str = "rgb"
    repeated_views: int = 1
    rand_augment: dict = None
    random_erasing: dict = None
    num_input_pipelines: int = 1
    input_pipeline_id: int = 0
    shard_policy: str = "auto"
    max_bad_records: int = None
    example_key: str = "position"
    step_choices: tuple = None
    seeded: bool = True

    @classmethod
    def create(cls, **options):
        """Checks and normalizes `train_dataset` keyword arguments.

        Raises:
            ValueError: naming the argument, the value and what is accepted.
        """
        spec = cls(**options)
        o = spec  # read-only view of the raw options
        step_choices = check_clip_options(
            clip_len=o.clip_len, crop_size=o.crop_size, batch_size=o.batch_size,
            frame_step=o.frame_step, standardize=o.standardize, mean=o.mean, std=o.std,
            num_segments=o.num_segments, new_length=o.new_length,
            short_video=o.short_video, modality=o.modality, frame_step_choices=True)
        check_sizes(cycle_length=o.cycle_length, repeated_views=o.repeated_views,
                    num_input_pipelines=o.num_input_pipelines)
        if o.batch_size % o.repeated_views:
            raise ValueError(
                "`batch_size` must be a multiple of `repeated_views` (each batch "
                "holds whole groups of views). Received: "
                f"batch_size={o.batch_size}, repeated_views={o.repeated_views}"
            )
        if not _is_int(o.input_pipeline_id) or not (
                0 <= o.input_pipeline_id < o.num_input_pipelines):
            raise ValueError(
                "`input_pipeline_id` must be an int in [0, num_input_pipelines). "
                f"Received: input_pipeline_id={o.input_pipeline_id!r}, "
                f"num_input_pipelines={o.num_input_pipelines}"
            )
        check_choice(o.shard_policy, SHARD_POLICIES, "shard_policy")
        check_choice(o.example_key, EXAMPLE_KEYS, "example_key")
        if o.max_bad_records is not None and not (
                _is_int(o.max_bad_records) and o.max_bad_records >= 0):
            raise ValueError("`max_bad_records` must be an int >= 0 or None (0.1 % of the "
                             f"records). Received: max_bad_records={o.max_bad_records!r}")
        if not (_is_int(o.shuffle_buffer) and o.shuffle_buffer >= 0):
            raise ValueError("`shuffle_buffer` must be an int >= 0 (0 = no shuffle). "
                             f"Received: shuffle_buffer={o.shuffle_buffer!r}")
        if not (_is_int(o.start_batch) and o.start_batch >= 0):
            raise ValueError("`start_batch` must be an int >= 0. "
                             f"Received: start_batch={o.start_batch!r}")
        check_choice(o.crop, CROPS, "crop")
        check_choice(o.augment_policy, transforms.AUGMENT_POLICIES, "augment_policy")
        if o.crop_scale is not None:
            check_scale(o.crop_scale)
        for name in ("flip_prob", "reverse_prob"):
            prob = getattr(o, name)
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={prob!r}")
        if (o.mixup_alpha > 0 or o.cutmix_alpha > 0) and not o.num_classes:
            raise ValueError("mixup/cutmix needs `num_classes`. Received: "
                             f"num_classes={o.num_classes!r}")
        seeded = o.seed is not None
        seed = int(o.seed) if seeded else int.from_bytes(os.urandom(4), "little") >> 1
        return dataclasses.replace(
            spec, seed=seed, seeded=seeded, step_choices=step_choices,
            rand_augment=_rand_augment_kwargs(o.rand_augment, o.modality),
            random_erasing=_random_erasing_kwargs(o.random_erasing, o.standardize),
        )

    @property
    def may_flip(self):
        """Known before tracing: no flip ops when no flip can happen."""
        return self.augment_policy == "uniform" or self.flip_prob > 0

    @property
    def may_reverse(self):
        if self.augment_policy == "uniform":
            return self.reverse_label_map is not None
        return self.reverse_prob > 0

    @property
    def mixes(self):
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """`pipeline.eval_dataset`'s options, checked (see its docstring)."""

    clip_len: int
    crop_size: int
    num_clips: int
    num_crops: int
    batch_size: int
    frame_step: int = 1
    standardize: str = "per_frame"
    mean: object = None
    std: object = None
    resize_short_side: int = None
    num_segments: int = None
    new_length: int = 1
    short_video: str = "repeat"
    with_ids: bool = False
    flatten_views: bool = False
    num_parallel_calls: int = tf.data.AUTOTUNE
    modality: str = "rgb"
    views_per_chunk: int = None

    @classmethod
    def create(cls, **options):
        spec = cls(**options)
        check_clip_options(
            clip_len=spec.clip_len, crop_size=spec.crop_size, batch_size=spec.batch_size,
            frame_step=spec.frame_step, standardize=spec.standardize, mean=spec.mean,
            std=spec.std, num_segments=spec.num_segments, new_length=spec.new_length,
            short_video=spec.short_video, modality=spec.modality, frame_step_choices=False)
        check_sizes(num_clips=spec.num_clips)
        check_choice(spec.num_crops, (1, 3), "num_crops")
        if spec.views_per_chunk is not None:
            check_sizes(views_per_chunk=spec.views_per_chunk)
            if spec.views_per_chunk > spec.num_views:
                raise ValueError(
                    "`views_per_chunk` must be at most num_clips * num_crops = "
                    f"{spec.num_views} (more would only add padding views). Received: "
                    f"views_per_chunk={spec.views_per_chunk}"
                )
            if spec.flatten_views:
                raise ValueError(
                    "`views_per_chunk` and `flatten_views` cannot be combined (single "
                    "views are already the smallest unit). Received: "
                    f"views_per_chunk={spec.views_per_chunk}, flatten_views=True"
                )
        return spec

    @property
    def num_views(self):
        return self.num_clips * self.num_crops

    @property
    def channels(self):
        return 3 if self.modality == "rgb" else 2


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _augment_options(name, options, fn, example):
    """`options` (dict, True = defaults, None / False = off) checked once by
    calling `fn(example, seed, **options)` eagerly; -> dict or None."""
    if options is None or options is False:
        return None
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"`{name}` must be a dict of `augment.{fn.__name__}` arguments "
                         f"or None. Received: {name}={options!r}")
    try:
        fn(example, tf.constant([0, 0]), **options)
    except TypeError as err:
        raise ValueError(f"`{name}`: {err}. Received: {name}={options!r}") from None
    return options


def _rand_augment_kwargs(options, modality):
    if options not in (None, False) and modality != "rgb":
        raise ValueError("`rand_augment` applies to RGB clips only. Received: "
                         f"modality={modality!r}")
    if isinstance(options, dict) and isinstance(options.get("ops"), str):
        check_choice(options["ops"], tuple(RAND_AUGMENT_OPS), "rand_augment.ops")
        options = {**options, "ops": RAND_AUGMENT_OPS[options["ops"]]}
    return _augment_options("rand_augment", options, augment.rand_augment,
                            tf.zeros([1, 4, 4, 3], tf.uint8))


def _random_erasing_kwargs(options, standardize):
    if options not in (None, False) and standardize == "none":
        raise ValueError("`random_erasing` fills boxes with standardized noise and needs "
                         "float output; it cannot run with standardize='none'. Received: "
                         f"random_erasing={options!r}, standardize='none'")
    return _augment_options("random_erasing", options, augment.random_erasing,
                            tf.zeros([1, 1, 4, 4, 3]))
