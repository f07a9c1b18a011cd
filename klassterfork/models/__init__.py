"""The model zoo: Keras 3 builders registered by name.

`build("R2Plus1D18", num_classes=400)` -> `keras.Model`, channels-last
(B, T, H, W, C). Every family module is imported here so its builders are
registered; importing builds nothing.
"""

import difflib

from klassterfork.models import (  # noqa: F401
    heads,
    layers,
    model3d1,
    msn,
    r2plus1d,
    temporal,
    tsn,
    two_stream,
    vit,
)
from klassterfork.models.heads import HEADS, resolve_head  # noqa: F401
from klassterfork.models.registry import MODELS


def available():
    """Registered model names, sorted.

    Returns:
        list of str.
    """
    return MODELS.names()


def build(name, **kwargs):
    """Builds a registered model.

    Args:
        name: str. A name from `available()`, e.g. "R2Plus1D18".
        **kwargs: the builder's keyword arguments (checked by name).

    Returns:
        `keras.Model`.

    Raises:
        ValueError: unknown `name` (the message lists the close matches and
            every available name).
        TypeError: a keyword the builder does not accept (the message names
            the close matches and the accepted keywords).
    """
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), available(), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model name.{hint} Available: {', '.join(available())}. "
            f"Received: name={name!r}"
        )
    bad = MODELS.check_args(name, kwargs)
    if bad:
        raise TypeError(f"`{bad[0]}` is {bad[1]}. Received: {bad[0]}={kwargs[bad[0]]!r}")
    return MODELS[name](**kwargs)
