"""Import of PyTorch checkpoints into klassterfork Keras models.

`torch_import.load_state_dict(path)` reads a `.pth` (torch is an optional
extra: `pip install .[torch]`); `torch_import.import_state_dict(model, sd)`
copies it into a model built by `klassterfork.models.build`.
"""

from klassterfork.weights.torch_import import (  # noqa: F401
    FAMILIES,
    import_state_dict,
    infer_family,
    load_state_dict,
    normalize_keys,
    torch_prefix,
)
