"""The model and head registries (one flat dict per kind).

Configs name a model as `{R2Plus1D18: {num_classes: 174}}` and a head as
`{EmbeddingHead: {units: 300}}`; both resolve through these registries.
"""

from klassterfork.registry import Registry

MODELS = Registry("model")
HEADS = Registry("head")
