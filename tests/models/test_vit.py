"""VideoViT (VideoMAE) and its frozen-block variant: counts, layers by hand."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import vit  # noqa: E402

SMALL = dict(variant="S", depth=2, num_frames=4, image_size=32)
FROZEN_SMALL = dict(frozen_block=True, frozen_width=64, frozen_heads=4,
                    frozen_hidden=96)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("variant, expected", [("S", 21_946_926), ("B", 86_361_006)])
def test_trainable_parameters_match_videomae(variant, expected):
    model = models.build("VideoViT", variant=variant, num_classes=174,
                         num_frames=16, image_size=224)
    assert trainable_count(model) == expected
    assert model.get_layer("pos_embed").output.shape == (None, 1568, model.get_layer(
        "fc_norm").output.shape[-1])  # 8 x 14 x 14 tokens


def test_frozen_block_counts_at_llama_size():
    model = models.build("VideoViT", variant="S", num_classes=174, frozen_block=True)
    assert model.count_params() == 227_480_110
    assert trainable_count(model) == 25_092_654  # ViT-S + 2 x 384 x 4096


def test_frozen_block_small_width_counts_and_loading(tmp_path):
    model = models.build("VideoViT", num_classes=5, **SMALL, **FROZEN_SMALL)
    vit_only = models.build("VideoViT", num_classes=5, **SMALL)
    assert trainable_count(model) == trainable_count(vit_only) + 2 * 384 * 64
    frozen = 4 * 64 * 64 + 3 * 64 * 96 + 3 * 64
    assert model.count_params() - trainable_count(model) == frozen
    rng = np.random.default_rng(1)
    w = {f"self_attn.{p}_proj.weight": rng.normal(size=(64, 64)) for p in "qkvo"}
    w.update({f"mlp.{p}_proj.weight": rng.normal(size=s) for p, s in
              [("gate", (96, 64)), ("up", (96, 64)), ("down", (64, 96))]})
    w.update({f"{n}.weight": rng.normal(size=64) for n in
              ("input_layernorm", "post_attention_layernorm", "norm")})
    np.savez(tmp_path / "block.npz", **w)
    model = models.build("VideoViT", num_classes=5, **SMALL, **FROZEN_SMALL,
                         frozen_weights=str(tmp_path / "block.npz"))
    got = model.get_layer("frozen_down_proj").get_weights()[0]
    np.testing.assert_allclose(got, w["mlp.down_proj.weight"].T, rtol=1e-6)
    np.savez(tmp_path / "bad.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match="bad.npz.*lack keys"):
        models.build("VideoViT", num_classes=5, **SMALL, **FROZEN_SMALL,
                     frozen_weights=str(tmp_path / "bad.npz"))


def test_sinusoid_table_by_hand():
    t = vit.sinusoid_table(3, 4)
    np.testing.assert_allclose(t[0], [0, 1, 0, 1])
    np.testing.assert_allclose(
        t[2], [np.sin(2), np.cos(2), np.sin(2 / 100), np.cos(2 / 100)], rtol=1e-6)


def test_qv_bias_attention_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    layer = vit.QVBiasAttention(2)
    layer.build(x.shape)
    w = [rng.normal(size=v.shape).astype("float32") for v in layer.weights]
    layer.set_weights(w)
    qkv_k, q_b, v_b, proj_k, proj_b = w
    q, k, v = np.split(x @ qkv_k, 3, axis=-1)
    q, v = q + q_b, v + v_b
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    logits = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(4)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    ref = (att @ heads(v)).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ proj_k + proj_b
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), ref,
                               rtol=1e-4, atol=1e-4)


def test_drop_path_drops_whole_examples():
    layer = vit.DropPath(0.5, seed=3)
    x = np.ones((64, 3, 2), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_example = np.unique(y.reshape(64, -1), axis=1)
    assert per_example.shape[1] == 1 and set(np.unique(y)) <= {0.0, 2.0}
    assert 10 < (y[:, 0, 0] == 0).sum() < 54


def test_multi_clip_embedding_and_round_trip(tmp_path):
    model = models.build("VideoViT", num_classes=None, num_clips=2, drop_path=0.0,
                         head={"EmbeddingHead": {"units": 6}}, **SMALL,
                         **FROZEN_SMALL)
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)
    model.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, atol=1e-6)
    assert not loaded.get_layer("frozen_self_attn").trainable
