"""Argument checks shared by the data transforms: errors name the argument,
what was received and what is accepted."""


def check_choice(value, accepted, name):
    if value not in accepted:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, accepted))}. "
            f"Received: {name}={value!r}"
        )


def check_positive(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
