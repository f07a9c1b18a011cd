"""Heads: what sits on top of a backbone's pooled features.

A head builder returns a callable `apply(features (B, D), prefix="")`
(`prefix` goes before its layer names, for models with several heads); the builder of
a model applies it inside its functional graph, so the head's layers are
ordinary, named layers of the model (checkpoint converters key on the names).
The final layers compute in float32 so a `mixed_bfloat16` policy keeps the
outputs in full precision.
"""

import inspect

import keras

from klassterfork.models.registry import HEADS


@HEADS.register("ClassificationHead")
def ClassificationHead(num_classes, dropout=0.0, init_std=0.01):
    """Dropout -> Dense(num_classes) logits.

    Args:
        num_classes: int. Number of classes.
        dropout: float. Dropout rate before the Dense. Defaults to 0.0.
        init_std: float. Standard deviation of the normal kernel init
            (torchvision video ResNets use 0.01, TSN 0.001). Defaults to 0.01.

    Returns:
        callable (B, D) -> (B, num_classes) float32 logits.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            "`num_classes` must be a positive int. "
            f"Received: num_classes={num_classes!r}"
        )

    def apply(x, prefix=""):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}head_dropout")(x)
        return keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=init_std),
            dtype="float32",
            name=f"{prefix}logits",
        )(x)

    return apply


@HEADS.register("EmbeddingHead")
def EmbeddingHead(units, dropout=0.0):
    """Dropout -> Dense(units) -> L2 normalisation along the last axis.

    Used for zero-shot / label-embedding training (cosine similarity against
    word vectors).

    Args:
        units: int. Embedding size.
        dropout: float. Dropout rate before the Dense. Defaults to 0.0.

    Returns:
        callable (B, D) -> (B, units) float32 vectors of unit L2 norm.
    """
    if not isinstance(units, int) or units < 1:
        raise ValueError(f"`units` must be a positive int. Received: units={units!r}")

    def apply(x, prefix=""):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}head_dropout")(x)
        x = keras.layers.Dense(units, dtype="float32", name=f"{prefix}embedding_dense")(x)
        return keras.layers.UnitNormalization(
            axis=-1, dtype="float32", name=f"{prefix}embedding"
        )(x)

    return apply


def resolve_head(head, **defaults):
    """Turns a builder's `head` argument into a head callable (or None).

    Args:
        head: None, a registered head name, or a one-key dict
            `{HeadName: {kwargs}}` (the config convention).
            None means `ClassificationHead` when `defaults["num_classes"]` is
            set, and no head (pooled features) when it is None.
        **defaults: values the model builder offers the head (`num_classes`,
            `dropout`, `init_std`); each fills an argument the head accepts
            and the caller left out.

    Returns:
        callable (B, D) -> outputs, or None for a features-only model.

    Raises:
        ValueError: unknown head name, malformed `head`, or a missing
            required head argument.
        TypeError: an argument the head does not accept.
    """
    if head is None:
        if defaults.get("num_classes") is None:
            return None
        head = "ClassificationHead"
    if isinstance(head, str):
        head = {head: {}}
    if not isinstance(head, dict) or len(head) != 1:
        raise ValueError(
            "`head` must be None, a head name or a one-key dict "
            f"{{HeadName: {{arguments}}}}. Accepted names: {', '.join(HEADS.names())}. "
            f"Received: head={head!r}"
        )
    ((name, kwargs),) = head.items()
    kwargs = dict(kwargs or {})
    if name not in HEADS:
        raise ValueError(HEADS.unknown_message(name))
    bad = HEADS.check_args(name, kwargs)
    if bad:
        raise TypeError(f"`head` argument `{bad[0]}`: {bad[1]}")
    accepted = HEADS.accepted_args(name)
    for key, value in defaults.items():
        if key in accepted and key not in kwargs and value is not None:
            kwargs[key] = value
    if name == "ClassificationHead" and kwargs.get("num_classes") is None:
        raise ValueError(
            "`num_classes` must be set for a ClassificationHead "
            "(pass num_classes=N, or num_classes=None with head=None for features). "
            f"Received: head={head!r}"
        )
    missing = [
        p.name
        for p in inspect.signature(HEADS[name]).parameters.values()
        if p.default is p.empty and p.name not in kwargs
    ]
    if missing:
        raise ValueError(
            f"head '{name}' needs `{missing[0]}`. Received: head={head!r}"
        )
    return HEADS[name](**kwargs)
