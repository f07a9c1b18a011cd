"""Resolving `{Name: {kwargs}}` blocks through a registry, with located errors."""

from klassterfork.config.loader import ConfigError


def split_component(block, source, key, registry):
    """Checks a one-key component dict; returns (name, kwargs).

    A bare string `Name` is accepted as `{Name: {}}`.
    """
    if isinstance(block, str):
        block = {block: {}}
    if not isinstance(block, dict) or len(block) != 1:
        raise ConfigError(
            source, key, f"must be a one-key dict {{Name: {{arguments}}}} naming a "
            f"{registry.kind}. Received: {block!r}. Accepted names: {', '.join(registry.names())}"
        )
    (name, kwargs), = block.items()
    kwargs = {} if kwargs is None else kwargs
    if name not in registry:
        raise ConfigError(source, f"{key}.{name}", registry.unknown_message(name))
    if not isinstance(kwargs, dict):
        raise ConfigError(
            source, f"{key}.{name}", f"arguments must be a dict. Received: {kwargs!r}"
        )
    bad = registry.check_args(name, kwargs)
    if bad:
        raise ConfigError(source, f"{key}.{name}.{bad[0]}", bad[1])
    return name, dict(kwargs)


def build_component(block, source, key, registry, **injected):
    """Builds a component; `injected` values fill arguments the builder accepts
    but the config left out (e.g. `steps_per_epoch` for epoch schedules)."""
    name, kwargs = split_component(block, source, key, registry)
    accepted = registry.accepted_args(name)
    for arg, value in injected.items():
        if arg not in kwargs and (accepted is None or arg in accepted):
            kwargs[arg] = value
    try:
        return registry[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, f"{key}.{name}", str(err)) from None
