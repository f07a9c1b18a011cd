"""Stand-ins of the public pretrained files the recipes' `init_weights` name.

The real files cannot be downloaded in a test. Each writer makes a file of
the same FORMAT and layout as the public one, from code that does not go
through klassterfork: torch state dicts of references/torch_reference.py
models (torchvision's ResNet-50 names; VideoMAE's pre-training checkpoint,
`{"model": {"encoder.*", "decoder.*", ...}}`), and keras.applications'
InceptionV3 saved by Keras' own legacy h5 writer (the layout of
`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`). Each returns
what the recipe's init_weights paragraph must then report: the number of
variables loaded (every tensor of the file that our model shares with the
reference network) and of file tensors left unused.
"""

import numpy as np

VIT_DIMS = {"S": (384, 6), "B": (768, 12)}  # variant -> (width, heads)


def _torch():
    import torch

    from references import torch_reference

    return torch, torch_reference


def _float_count(state):
    """Tensors init_weights can load (BatchNorm's step counter is not one)."""
    return sum(not k.endswith("num_batches_tracked") for k in state)


def torchvision_resnet50(path):
    """torchvision `resnet50` layout (conv1, bn1, layer1-4, fc 1000).

    Returns (loaded, unused): everything but the 1000-class fc loads (fc
    pairs with the excluded head: not loaded, not unused).
    """
    torch, ref = _torch()
    state = ref.randomize(ref.ResNet50TSN(1000, 1), seed=3).state_dict()
    torch.save(state, path)
    return _float_count(state) - 2, 0  # fc.weight / fc.bias: excluded head


def videomae_pretrain(path, variant):
    """A VideoMAE pre-training checkpoint: the encoder under `encoder.`
    (its final `norm`, which fine-tuning replaces by `fc_norm`), a decoder,
    `mask_token` and `encoder_to_decoder`, all under "model".

    Returns (loaded, unused).
    """
    torch, ref = _torch()
    dim, heads = VIT_DIMS[variant]
    vit = ref.VideoMAEViT(num_classes=1, dim=dim, num_heads=heads)
    encoder = {
        k: v
        for k, v in ref.randomize(vit, seed=4).state_dict().items()
        if not k.startswith(("head.", "fc_norm."))
    }
    model = {f"encoder.{k}": v for k, v in encoder.items()}
    gen = torch.Generator().manual_seed(5)
    extra = {
        "encoder.norm.weight": torch.ones(dim),
        "encoder.norm.bias": torch.zeros(dim),
        "mask_token": torch.randn(1, 1, 192, generator=gen),
        "encoder_to_decoder.weight": torch.randn(192, dim, generator=gen),
        "decoder.norm.weight": torch.ones(192),
        "decoder.head.weight": torch.randn(1536, 192, generator=gen),
    }
    model.update(extra)
    torch.save({"model": model, "epoch": 2399}, path)
    return len(encoder), len(extra)


def inception_v3_notop(path):
    """keras.applications InceptionV3 no-top weights, Keras 2 h5 layout.

    Returns (loaded, unused) for the RGB stream.
    """
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    app = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(75, 75, 3)
    )
    rng = np.random.default_rng(6)
    for w in app.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    loaded = len(app.weights)
    keras.backend.clear_session()
    return loaded, 0


def frozen_block(path, *, dim=4096, hidden=11008):
    """The LLaMA-style block `.npz` the frozen-block recipe reads."""
    rng = np.random.default_rng(7)
    w = {
        f"self_attn.{p}_proj.weight": rng.normal(0, 0.01, (dim, dim)).astype("float32")
        for p in "qkvo"
    }
    w.update(
        {
            f"mlp.{p}_proj.weight": rng.normal(0, 0.01, s).astype("float32")
            for p, s in [
                ("gate", (hidden, dim)),
                ("up", (hidden, dim)),
                ("down", (dim, hidden)),
            ]
        }
    )
    w.update(
        {
            f"{n}.weight": np.ones(dim, "float32")
            for n in ("input_layernorm", "post_attention_layernorm", "norm")
        }
    )
    np.savez(path, **w)
