"""Options declared once, as dataclass fields that carry their own rules.

A spec (the dataset blocks in `data/spec.py`) is a frozen dataclass whose
fields are made with `option(...)`: the default, a one-line doc, the kind of
value, a minimum or the accepted values. Everything else derives from the
fields: checking (`check_fields`, called from `__post_init__`, so every
instance — also one made by `dataclasses.replace` — is valid), building from
a flat mapping with unknown-key errors that list what is accepted
(`from_flat`), the flat view (`to_flat`, for `--print-config`), and the
option table in docs/ (`markdown_table`).

A spec may group its fields in nested specs (one level: `Sampling`,
`Crop`, ...); the flat names must then be unique across the groups, as the
config's dataset block is flat.
"""

import dataclasses
import difflib

REQUIRED = "required"  # metadata flag: no default; `from_flat` insists
KINDS = {
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "int_or_list": "an integer or a list of numbers",
    "numbers": "a list of numbers",
    "pair": "a list of two numbers",
    "dict_or_bool": "a dict of keyword arguments, true or false",
    "dict": "a dict",
    "str_or_list": "a string or a list of strings",
    "any": "a value",
}


class OptionError(ValueError):
    """A bad option value. `option` is its flat name (for located errors)."""

    def __init__(self, option, message):
        super().__init__(message)
        self.option = option


def option(default=None, doc="", *, kind="any", minimum=None, choices=None,
           required=False):
    """A dataclass field with its rules in the metadata.

    Args:
        default: the default (None means unset); ignored when `required`.
        doc: str. One line: what the option does.
        kind: str. A key of `KINDS`.
        minimum: number or None. Smallest accepted value (numbers, lists of
            numbers).
        choices: tuple or None. The accepted values.
        required: bool. No default: `from_flat` raises when it is missing.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {sorted(KINDS)}. Received: kind={kind!r}")
    meta = {"doc": doc, "kind": kind, "minimum": minimum, "choices": choices,
            REQUIRED: required}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(cls, doc=""):
    """A field holding a nested spec, built from its defaults."""
    return dataclasses.field(default_factory=cls, metadata={"group": True, "doc": doc})


def is_group(field):
    return bool(field.metadata.get("group"))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def problem(value, meta):
    """What is wrong with `value` under the field's rules, or None."""
    if value is None:
        return None  # unset; required options are checked by `from_flat`
    kind, minimum, choices = meta["kind"], meta["minimum"], meta["choices"]
    if choices is not None and not kind.startswith(("dict", "any")):
        if value not in choices or isinstance(value, bool) != any(
                isinstance(c, bool) and c == value for c in choices):
            return f"must be one of {list(choices)}"
    ok = {
        "int": lambda v: _is_int(v),
        "number": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "int_or_list": lambda v: _is_int(v) or (
            isinstance(v, (list, tuple)) and v and all(_is_number(x) for x in v)),
        "numbers": lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v),
        "pair": lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(
            _is_number(x) for x in v),
        "dict_or_bool": lambda v: isinstance(v, (dict, bool)),
        "dict": lambda v: isinstance(v, dict),
        "str_or_list": lambda v: isinstance(v, str) or (
            isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
        "any": lambda v: True,
    }[kind](value)
    wanted = f"must be {KINDS[kind]}" + (f" >= {minimum}" if minimum is not None else "")
    if not ok:
        return wanted
    if minimum is not None and kind in ("int", "number", "int_or_list", "numbers"):
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(x < minimum for x in items):
            return wanted
    return None


def check_fields(spec):
    """Raises `OptionError` on the first field of `spec` that breaks its
    rules (nested groups check themselves when built)."""
    for field in dataclasses.fields(spec):
        if is_group(field):
            continue
        value = getattr(spec, field.name)
        found = problem(value, field.metadata)
        if found:
            raise OptionError(field.name, f"`{field.name}` {found}. Received: "
                                          f"{value!r} ({type(value).__name__})")


def flat_fields(cls):
    """[(name, group_name or None, field)] of `cls`, groups expanded."""
    out = []
    for field in dataclasses.fields(cls):
        if is_group(field):
            out += [(name, field.name, f) for name, _, f in flat_fields(field.default_factory)]
        else:
            out.append((field.name, None, field))
    return out


def accepted(cls):
    return [name for name, _, _ in flat_fields(cls)]


def from_flat(cls, options):
    """`cls` built from a flat mapping of option names.

    Raises:
        OptionError: on an unknown name (with close matches and the
            accepted names), a missing required option, or a bad value.
    """
    fields = flat_fields(cls)
    names = [name for name, _, _ in fields]
    for name in options:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise OptionError(name, f"unknown option `{name}`.{hint} Accepted: "
                                    f"{', '.join(names)}")
    for name, _, field in fields:
        if field.metadata.get(REQUIRED) and options.get(name) is None:
            raise OptionError(name, f"`{name}` is required ({field.metadata['doc']}).")
    grouped = {}
    for name, group_name, _ in fields:
        if name in options:
            grouped.setdefault(group_name, {})[name] = options[name]
    kwargs = dict(grouped.get(None, {}))
    for field in dataclasses.fields(cls):
        if is_group(field):
            kwargs[field.name] = field.default_factory(**grouped.get(field.name, {}))
    return cls(**kwargs)


def to_flat(spec):
    """The flat option mapping of `spec` (every option, defaults included)."""
    out = {}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if is_group(field):
            out.update(to_flat(value))
        else:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def markdown_table(cls):
    """The option table of `cls` for docs/: option, group, default, accepted, doc."""
    rows = ["| option | group | default | accepted | what |", "|---|---|---|---|---|"]
    for name, group_name, field in flat_fields(cls):
        meta = field.metadata
        default = "required" if meta.get(REQUIRED) else _shown(
            field.default_factory() if field.default_factory is not dataclasses.MISSING
            else field.default)
        accepted_values = (", ".join(f"`{_shown(c)}`" for c in meta["choices"])
                           if meta["choices"] else KINDS[meta["kind"]])
        if meta["minimum"] is not None:
            accepted_values += f" >= {meta['minimum']}"
        rows.append(f"| `{name}` | {group_name or ''} | {default} | {accepted_values} | "
                    f"{meta['doc']} |")
    return "\n".join(rows)


def _shown(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).replace("|", "\\|")
