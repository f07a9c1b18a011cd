"""hjson configs: loading, stages, `${env:...}`, `--set` overrides, errors.

A config file is one stage dict or a list of stages. A later stage inherits
every key it leaves out from the stage before (a deep merge), so stage 2 of a
fine-tuning recipe only states what changes (say, the learning rate).

Every error is a `ConfigError` whose message starts `path:line: dotted.key:`
so a user can jump to the offending line.
"""

import copy
import difflib
import os
import re

import hjson

# `tracking` (MLflow, training/tracking.py) is stated in the first stage and
# inherited unchanged by the later ones: one MLflow run per experiment.
STAGE_KEYS = ("datasets", "model", "loss", "metrics", "optimizer", "train_loop", "meta",
              "tracking", "init_weights")

_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config problem, located by file, line and dotted key."""

    def __init__(self, source, key, problem):
        self.source, self.key, self.problem = source, key, problem
        override = source.override(key) if source is not None else None
        if source is None:
            prefix = f"{key}: " if key else ""
        elif override:
            # The value came from the command line, not from a line of the file.
            prefix = f"{source.path}: --set {override}: {key}: "
        else:
            where = source.locate(key)
            prefix = f"{where}: {key}: " if key else f"{where}: "
        super().__init__(prefix + problem)


class Source:
    """The text of a config file, to map a dotted key to its line."""

    def __init__(self, path, text, overrides=()):
        self.path, self.text = str(path), text
        # dotted key -> the `--set key=value` text that set it
        self.overrides = {}
        for item in overrides:
            if "=" in item:
                self.overrides[item.split("=", 1)[0].strip()] = item

    def override(self, key):
        """The `--set` text that set `key` (or a block holding it), or None."""
        for okey, item in self.overrides.items():
            if key and (key == okey or str(key).startswith(okey + ".")):
                return item
        return None

    def line(self, key):
        """Best-effort line of `key` ("a.b.0.c"): each part searched after the last."""
        pos, line = 0, None
        for part in str(key).split("."):
            if not part or part.isdigit():
                continue
            pattern = re.compile(
                r"(^|[\s{,])[\"']?" + re.escape(part) + r"[\"']?\s*:", re.MULTILINE
            )
            match = pattern.search(self.text, pos)
            if match is None:
                break
            pos = match.end()
            line = self.text.count("\n", 0, match.start(0) + len(match.group(1))) + 1
        return line

    def locate(self, key):
        line = self.line(key) if key else None
        return f"{self.path}:{line}" if line else self.path


def substitute_env(value, source=None, key=""):
    """Replaces `${env:NAME}` / `${env:NAME:-default}` in every string."""
    if isinstance(value, dict):
        return {k: substitute_env(v, source, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, source, f"{key}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(match):
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            source, key, f"environment variable {name} is not set and has no default "
            f"(write ${{env:{name}:-default}})."
        )

    return _ENV.sub(repl, value)


def deep_merge(base, update):
    """`update` over `base`; dicts merge key by key, anything else replaces.

    A component dict (`{Name: {...}}`) whose single key changes replaces the
    old component instead of merging two names into one dict.
    """
    if not (isinstance(base, dict) and isinstance(update, dict)):
        return copy.deepcopy(update)
    if _is_component(base) and _is_component(update) and set(base) != set(update):
        return copy.deepcopy(update)
    merged = copy.deepcopy(base)
    for k, v in update.items():
        merged[k] = deep_merge(merged[k], v) if k in merged else copy.deepcopy(v)
    return merged


def _is_component(value):
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value))[:1].isupper()
    )


def parse_override(text):
    """`a.b.c=value` -> (["a","b","c"], value parsed as hjson, else a string)."""
    if "=" not in text:
        raise ConfigError(None, "", f"--set expects key=value. Received: {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = hjson.loads(raw) if raw.strip() else ""
    except hjson.HjsonDecodeError:
        value = raw
    if isinstance(value, str):
        value = raw  # hjson would strip quotes and spaces of bare strings
    return key.strip(), value


def set_dotted(config, key, value, source=None):
    """Sets `config[a][b][c] = value` for key "a.b.c"; list parts are indices."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            if part not in node and node and i == 0 and part not in STAGE_KEYS:
                close = difflib.get_close_matches(part, list(node), n=3)
                raise ConfigError(
                    source, key, f"--set names an unknown key '{part}'."
                    + (f" Did you mean: {', '.join(close)}?" if close else "")
                )
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_text(text, path="<string>", overrides=()):
    """Parses config text into a list of fully inherited stage dicts."""
    source = Source(path, text, overrides)
    try:
        raw = hjson.loads(text)
    except hjson.HjsonDecodeError as err:
        raise ConfigError(
            None, "", f"{path}:{err.lineno}:{err.colno}: invalid hjson: {err.msg}"
        ) from None
    stages = raw if isinstance(raw, list) else [raw]
    if not stages:
        raise ConfigError(source, "", "the config holds no stage.")
    resolved, previous = [], {}
    for index, stage in enumerate(stages):
        key = str(index) if isinstance(raw, list) else ""
        if not isinstance(stage, dict):
            raise ConfigError(
                source, key, f"a stage must be a dict. Received: {type(stage).__name__}"
            )
        for name in stage:
            if name not in STAGE_KEYS:
                close = difflib.get_close_matches(name, STAGE_KEYS, n=3)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise ConfigError(
                    source, name, f"unknown stage key.{hint} Accepted: {', '.join(STAGE_KEYS)}"
                )
        merged = deep_merge(previous, hjson_to_plain(stage))
        for item in overrides:
            okey, value = parse_override(item)
            set_dotted(merged, okey, value, source)
        merged = substitute_env(merged, source)
        resolved.append(merged)
        previous = merged
    return resolved, source


def load(path, overrides=()):
    """Reads a config file. Returns (list of stage dicts, Source)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(None, "", f"cannot read config {path}: {err.strerror}") from None
    return load_text(text, str(path), overrides)


def hjson_to_plain(value):
    """hjson's OrderedDicts -> plain dicts (stable repr, json-dumpable)."""
    if isinstance(value, dict):
        return {k: hjson_to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hjson_to_plain(v) for v in value]
    return value


def find_config(name, runs_dir):
    """A path as given, else a bare file name looked up under `runs_dir`."""
    if os.path.exists(name):
        return name
    if os.sep not in name:
        for root, _, files in sorted(os.walk(runs_dir)):
            if name in files:
                return os.path.join(root, name)
    raise ConfigError(
        None, "", f"config {name!r} not found (as a path, or as a file name under {runs_dir})."
    )
