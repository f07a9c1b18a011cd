"""Pretrained weights: PyTorch import and the stage key `init_weights`.

`torch_import.load_state_dict(path)` reads a `.pth` (torch is an optional
extra: `pip install .[torch]`); `torch_import.import_state_dict(model, sd)`
copies it into a model built by `klassterfork.models.build`.
`init_weights.load_into(model, path, exclude=..., strict=...)` starts a model
from any supported weights file (Keras, keras.applications, PyTorch, a run's
checkpoint folder) and reports what it loaded (`InitReport`).
"""

from klassterfork.weights.init_weights import (  # noqa: F401
    InitReport,
    InitWeightsError,
    load_into,
)
from klassterfork.weights.torch_import import (  # noqa: F401
    FAMILIES,
    import_state_dict,
    infer_family,
    load_state_dict,
    normalize_keys,
    torch_prefix,
)
