"""Types and ranges of the `train_loop` values.

(Dataset blocks are checked against their typed spec, `data/spec.py`, by
`training.builders.check_datasets`.)

Names are checked by the registry and the loaders; this checks values, before
anything is built, so `batch_size: "eight"` or `batch_size: -8` gives the same
one-paragraph located error as an unknown name instead of a traceback (or, for
-8, a wrong one). Component arguments (model, optimizer, schedule) are checked
by their builders, whose errors `build_component` locates.

A rule is a row of `RULES`: (dotted key pattern, kind, minimum). `*` matches
one key. Kinds: "int", "number", "bool",
"int_or_list" (an int, or a list of numbers: `frame_step`'s multi-rate form).
A null value means "unset" wherever the default is None (see `NULLABLE`).
"""

import fnmatch

from klassterfork.config.loader import ConfigError

RULES = (
    ("train_loop.epochs", "int", 1),
    ("train_loop.steps_per_epoch", "int", 1),
    ("train_loop.checkpoint_every_steps", "int", 1),
    ("train_loop.keep_checkpoints", "int", 1),
    ("train_loop.log_every_steps", "int", 1),
    ("train_loop.eval_every_epochs", "int", 1),
    ("train_loop.seed", "int", 0),
    ("train_loop.stop_after_steps", "int", 1),
    ("train_loop.logical_cpu_devices", "int", 1),
    ("train_loop.jit_compile", "bool", None),
    ("train_loop.deterministic", "bool", None),
    ("train_loop.progress", "bool", None),
    ("train_loop.sync_batchnorm", "bool", None),
    ("train_loop.plot", "bool", None),
)
NULLABLE = {
    "train_loop.steps_per_epoch", "train_loop.stop_after_steps",
    "train_loop.logical_cpu_devices",
}
WORDS = {"int": "an integer", "number": "a number", "bool": "true or false",
         "int_or_list": "an integer or a list of numbers"}


def check_stage(stage, source):
    """Raises a located `ConfigError` on the first value of the wrong type or
    out of range among the keys of `RULES`."""
    for key, value in _flatten(stage):
        for pattern, kind, minimum in RULES:
            if fnmatch.fnmatchcase(key, pattern) and not (
                    value is None and pattern in NULLABLE):
                problem = _problem(value, kind, minimum)
                if problem:
                    raise ConfigError(source, key, problem)


def _flatten(stage):
    block = stage.get("train_loop")
    if isinstance(block, dict):
        for name, value in block.items():
            yield f"train_loop.{name}", value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(value, kind, minimum):
    """What is wrong with `value` as `kind` >= `minimum`, or None."""
    accepted = WORDS[kind] + (f" >= {minimum}" if minimum is not None else "")
    received = f"Received: {value!r} ({type(value).__name__})"
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = _is_int(value) and value >= minimum
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum
    else:  # int_or_list
        items = value if isinstance(value, list) and value else [value]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= minimum
                 for v in items) and (isinstance(value, list) or _is_int(value))
    return None if ok else f"must be {accepted}. {received}"
