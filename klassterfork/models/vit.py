"""VideoViT: the VideoMAE fine-tuning ViT (Tong et al., NeurIPS 2022).

Tubelet embedding Conv3D (2x16x16, stride 2x16x16, with bias) -> tokens
(B, N, D) + fixed sinusoid positions (not trained; no class token) -> `depth`
pre-norm blocks (LayerNorm eps 1e-6; attention whose qkv projection has a
bias on q and v only; MLP D -> 4D -> D with exact GELU; drop path) -> mean
over tokens -> LayerNorm (`fc_norm`) -> head.
ViT-S: 21,946,926, ViT-B: 86,361,006 trainable parameters at 174 classes and
16x224x224 input.

`frozen_block=True` inserts, after the ViT blocks and before pooling, a
frozen LLaMA-style transformer block between two trainable linear maps
(Pang et al., "Frozen transformers in language models are effective visual
encoder layers", 2023): Dense(D -> W, no bias) -> block (RMSNorm eps 1e-6,
`frozen_heads` heads, no rotary positions, no causal mask, SwiGLU hidden
`frozen_hidden`) -> RMSNorm -> Dense(W -> D, no bias). The block and the
final RMSNorm are frozen; their weights come from `frozen_weights`, a local
`.npz` with Hugging Face LLaMA names (torch (out, in) layout):
`self_attn.{q,k,v,o}_proj.weight`, `mlp.{gate,up,down}_proj.weight`,
`input_layernorm.weight`, `post_attention_layernorm.weight`, `norm.weight`.
"""

import keras
import numpy as np
from keras import layers, ops

from klassterfork.models.heads import resolve_head
from klassterfork.models.layers import FoldClips, MeanOverClips, choose
from klassterfork.models.registry import MODELS

VARIANTS = {
    "S": dict(dim=384, depth=12, num_heads=6),
    "B": dict(dim=768, depth=12, num_heads=12),
}
TUBELET = (2, 16, 16)
LN_EPSILON = 1e-6


def sinusoid_table(num_positions, dim):
    """VideoMAE's `get_sinusoid_encoding_table`: (N, D) float32,
    angle[p, j] = p / 10000 ** (2 (j // 2) / D); sin on even j, cos on odd."""
    position = np.arange(num_positions)[:, None]
    angle = position / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None]
    table = np.zeros((num_positions, dim))
    table[:, 0::2] = np.sin(angle[:, 0::2])
    table[:, 1::2] = np.cos(angle[:, 1::2])
    return table.astype("float32")


def _heads_attention(q, k, v, num_heads):
    """(B, N, D) q, k, v -> (B, N, D), softmax(q k^T / sqrt(D / heads)) v."""
    batch_shape = ops.shape(q)[:2]
    dim = q.shape[-1]
    split = lambda t: ops.reshape(t, (-1, batch_shape[1], num_heads, dim // num_heads))  # noqa: E731
    out = ops.dot_product_attention(split(q), split(k), split(v))
    return ops.reshape(out, (-1, batch_shape[1], dim))


@keras.saving.register_keras_serializable(package="klassterfork")
class AddPositions(keras.layers.Layer):
    """Adds the fixed sinusoid table: (B, N, D) -> (B, N, D)."""

    def build(self, input_shape):
        self.table = sinusoid_table(input_shape[1], input_shape[2])

    def call(self, x):
        return x + ops.cast(self.table, x.dtype)[None]


@keras.saving.register_keras_serializable(package="klassterfork")
class QVBiasAttention(keras.layers.Layer):
    """VideoMAE attention: qkv = x W_qkv + (q_bias, 0, v_bias); heads; proj.

    Weights: `qkv_kernel` (D, 3D), `q_bias` (D), `v_bias` (D), `proj_kernel`
    (D, D), `proj_bias` (D). (B, N, D) -> (B, N, D).

    Args:
        num_heads: int. Attention heads.
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        dim = input_shape[-1]
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.qkv_kernel = self.add_weight(shape=(dim, 3 * dim), initializer=init,
                                          name="qkv_kernel")
        self.q_bias = self.add_weight(shape=(dim,), initializer="zeros", name="q_bias")
        self.v_bias = self.add_weight(shape=(dim,), initializer="zeros", name="v_bias")
        self.proj_kernel = self.add_weight(shape=(dim, dim), initializer=init,
                                           name="proj_kernel")
        self.proj_bias = self.add_weight(shape=(dim,), initializer="zeros",
                                         name="proj_bias")

    def call(self, x):
        qkv = ops.matmul(x, ops.cast(self.qkv_kernel, x.dtype))
        q, k, v = ops.split(qkv, 3, axis=-1)
        q = q + ops.cast(self.q_bias, x.dtype)
        v = v + ops.cast(self.v_bias, x.dtype)
        out = _heads_attention(q, k, v, self.num_heads)
        return ops.matmul(out, ops.cast(self.proj_kernel, x.dtype)) + ops.cast(
            self.proj_bias, x.dtype)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="klassterfork")
class PlainAttention(keras.layers.Layer):
    """LLaMA attention without rotary positions or mask, no biases.

    Weights `q_kernel`, `k_kernel`, `v_kernel`, `o_kernel`, each (D, D).
    (B, N, D) -> (B, N, D).

    Args:
        num_heads: int. Attention heads.
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        dim = input_shape[-1]
        for name in ("q", "k", "v", "o"):
            setattr(self, f"{name}_kernel", self.add_weight(
                shape=(dim, dim), initializer=keras.initializers.TruncatedNormal(
                    stddev=0.02), name=f"{name}_kernel"))

    def call(self, x):
        q, k, v = (ops.matmul(x, ops.cast(w, x.dtype)) for w in
                   (self.q_kernel, self.k_kernel, self.v_kernel))
        out = _heads_attention(q, k, v, self.num_heads)
        return ops.matmul(out, ops.cast(self.o_kernel, x.dtype))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="klassterfork")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per example in
    training and rescales the kept ones by 1 / (1 - rate).

    Args:
        rate: float. Drop probability.
        seed: int or None. Seed of the layer's generator.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or not self.rate:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x * ops.cast(mask / keep, x.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def vit_block(x, *, num_heads, drop_path, name):
    """Pre-norm ViT block: (B, N, D) -> (B, N, D)."""
    dim = x.shape[-1]
    y = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm1")(x)
    y = QVBiasAttention(num_heads, name=f"{name}_attn")(y)
    y = DropPath(drop_path, name=f"{name}_drop_path1")(y)
    x = layers.Add(name=f"{name}_add1")([x, y])
    y = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm2")(x)
    y = layers.Dense(4 * dim, activation="gelu", name=f"{name}_fc1")(y)
    y = layers.Dense(dim, name=f"{name}_fc2")(y)
    y = DropPath(drop_path, name=f"{name}_drop_path2")(y)
    return layers.Add(name=f"{name}_add2")([x, y])


def frozen_llama_block(x, *, width, num_heads, hidden, name):
    """D -> W linear map, frozen LLaMA block + final RMSNorm, W -> D map."""
    dim = x.shape[-1]
    x = layers.Dense(width, use_bias=False, name=f"{name}_in")(x)
    y = layers.RMSNormalization(epsilon=1e-6, trainable=False,
                                name=f"{name}_input_layernorm")(x)
    y = PlainAttention(num_heads, trainable=False, name=f"{name}_self_attn")(y)
    x = layers.Add(name=f"{name}_add1")([x, y])
    y = layers.RMSNormalization(epsilon=1e-6, trainable=False,
                                name=f"{name}_post_attention_layernorm")(x)
    gate = layers.Dense(hidden, use_bias=False, activation="silu", trainable=False,
                        name=f"{name}_gate_proj")(y)
    up = layers.Dense(hidden, use_bias=False, trainable=False,
                      name=f"{name}_up_proj")(y)
    y = layers.Multiply(name=f"{name}_swiglu")([gate, up])
    y = layers.Dense(width, use_bias=False, trainable=False,
                     name=f"{name}_down_proj")(y)
    x = layers.Add(name=f"{name}_add2")([x, y])
    x = layers.RMSNormalization(epsilon=1e-6, trainable=False, name=f"{name}_norm")(x)
    return layers.Dense(dim, use_bias=False, name=f"{name}_out")(x)


def load_frozen_weights(model, path, name="frozen"):
    """Loads a LLaMA layer from a local `.npz` (names in the module doc)."""
    with np.load(path) as f:
        w = {k: f[k] for k in f.files}
    required = [f"self_attn.{p}_proj.weight" for p in "qkvo"] + [
        f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")] + [
        "input_layernorm.weight", "post_attention_layernorm.weight", "norm.weight"]
    missing = [k for k in required if k not in w]
    if missing:
        raise ValueError(f"{path}: frozen block weights lack keys {missing}. "
                         f"Found: {sorted(w)}")
    model.get_layer(f"{name}_self_attn").set_weights(
        [w[f"self_attn.{p}_proj.weight"].T for p in "qkvo"])
    for p in ("gate", "up", "down"):
        model.get_layer(f"{name}_{p}_proj").set_weights([w[f"mlp.{p}_proj.weight"].T])
    for n in ("input_layernorm", "post_attention_layernorm", "norm"):
        model.get_layer(f"{name}_{n}").set_weights([w[f"{n}.weight"]])


@MODELS.register("VideoViT")
def VideoViT(
    *,
    num_classes,
    variant="B",
    num_frames=16,
    image_size=224,
    num_clips=None,
    depth=None,
    drop_path=0.1,
    dropout=0.0,
    init_std=2e-5,
    head=None,
    frozen_block=False,
    frozen_width=4096,
    frozen_heads=32,
    frozen_hidden=11008,
    frozen_weights=None,
):
    """VideoMAE ViT-S/B video classifier (see the module docstring).

    Args:
        num_classes: int or None. Classes of the default ClassificationHead;
            None with `head=None` returns the (B, D) pooled features.
        variant: str. "S" (D 384, 6 heads) or "B" (D 768, 12 heads).
            Defaults to "B".
        num_frames: int. T, a multiple of 2. Defaults to 16.
        image_size: int. H = W, a multiple of 16. Defaults to 224.
        num_clips: int or None. If set, input (B, clips, T, H, W, 3) and the
            pooled features are averaged over clips. Defaults to None.
        depth: int or None. Blocks (reduced for tests); None: the variant's
            12. Defaults to None.
        drop_path: float. Largest stochastic-depth rate (linear over blocks).
            Defaults to 0.1.
        dropout: float. Dropout before the head. Defaults to 0.0.
        init_std: float. Head init std (VideoMAE: 0.02 x init_scale 0.001).
            Defaults to 2e-5.
        head: None, a head name or `{HeadName: {kwargs}}`. Defaults to None.
        frozen_block: bool. Insert the frozen LLaMA block. Defaults to False.
        frozen_width, frozen_heads, frozen_hidden: int. Its width (4096),
            heads (32) and SwiGLU hidden size (11008).
        frozen_weights: str or None. Local `.npz` of the block; None keeps
            the random init (tests). Defaults to None.

    Returns:
        `keras.Model`: (B, T, H, W, 3) -> (B, num_classes) logits.
    """
    cfg = dict(VARIANTS[choose(variant, tuple(VARIANTS), "variant")])
    if depth is not None:
        cfg["depth"] = depth
    if num_frames % TUBELET[0] or image_size % TUBELET[1]:
        raise ValueError(
            "`num_frames` must be a multiple of 2 and `image_size` of 16. "
            f"Received: num_frames={num_frames}, image_size={image_size}")
    head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout,
                           init_std=init_std)
    shape = (num_frames, image_size, image_size, 3)
    inputs = keras.Input(shape=(num_clips,) + shape if num_clips else shape,
                         name="video")
    x = FoldClips(name="fold_clips")(inputs) if num_clips else inputs
    x = layers.Conv3D(cfg["dim"], TUBELET, strides=TUBELET, name="patch_embed")(x)
    x = layers.Reshape((-1, cfg["dim"]), name="tokens")(x)
    x = AddPositions(name="pos_embed")(x)
    rates = np.linspace(0, drop_path, cfg["depth"]) if cfg["depth"] else []
    for i, rate in enumerate(rates):
        x = vit_block(x, num_heads=cfg["num_heads"], drop_path=float(rate),
                      name=f"block{i}")
    if frozen_block:
        x = frozen_llama_block(x, width=frozen_width, num_heads=frozen_heads,
                               hidden=frozen_hidden, name="frozen")
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="fc_norm")(x)
    if num_clips:
        x = MeanOverClips(num_clips, name="clip_mean")(x)
    outputs = head_fn(x) if head_fn is not None else x
    model = keras.Model(inputs, outputs, name=f"videovit_{variant.lower()}")
    if frozen_block and frozen_weights is not None:
        load_frozen_weights(model, frozen_weights)
    return model
