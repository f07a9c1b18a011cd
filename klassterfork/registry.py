"""One flat registry per kind of component: `{name: builder}`.

Configs name components as one-key dicts `{Name: {kwargs}}`; `Registry.build`
checks the name and every keyword against the builder's signature so a typo
fails with the accepted names instead of being swallowed.
"""

import difflib
import inspect


class Registry:
    """A `{name: builder}` dict with a `register(name)` decorator.

    Args:
        kind: str. What is registered ("model", "loss", ...), used in errors.
    """

    def __init__(self, kind):
        self.kind = kind
        self._fns = {}

    def register(self, name=None):
        """Decorator: registers `fn` under `name` (default `fn.__name__`)."""

        def decorate(fn):
            key = name or fn.__name__
            if key in self._fns:
                raise ValueError(
                    f"{self.kind} '{key}' is already registered "
                    f"(by {self._fns[key].__module__})."
                )
            self._fns[key] = fn
            return fn

        return decorate

    def add(self, name, fn):
        """Registers `fn` under `name` without a decorator (Keras built-ins)."""
        return self.register(name)(fn)

    def __contains__(self, name):
        return name in self._fns

    def __getitem__(self, name):
        if name not in self._fns:
            raise KeyError(self.unknown_message(name))
        return self._fns[name]

    def names(self):
        return sorted(self._fns)

    def unknown_message(self, name):
        close = difflib.get_close_matches(str(name), self._fns, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return (
            f"unknown {self.kind} '{name}'.{hint} "
            f"Accepted: {', '.join(self.names())}"
        )

    def accepted_args(self, name):
        """Keyword names the builder accepts.

        A `**kwargs` catch-all is not counted: Keras classes forward it to a
        base class that rejects unknown names late and vaguely, so a config
        may only use named arguments.
        """
        params = inspect.signature(self[name]).parameters.values()
        return [
            p.name
            for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def check_args(self, name, kwargs):
        """Returns (bad_key, message) for the first unknown keyword, or None."""
        accepted = self.accepted_args(name)
        if accepted is None:
            return None
        for key in sorted(set(kwargs) - set(accepted)):
            close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            return key, (
                f"not an argument of {self.kind} '{name}'.{hint} "
                f"Accepted: {', '.join(accepted)}"
            )
        return None

    def build(self, name, **kwargs):
        bad = self.check_args(name, kwargs)
        if bad:
            raise TypeError(f"{bad[0]}: {bad[1]}")
        return self[name](**kwargs)
