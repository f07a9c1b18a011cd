"""TwoStream2D: RGB and optical-flow frame classifiers with late fusion.

Simonyan & Zisserman (NeurIPS 2014), with `keras.applications` backbones
(InceptionV3 with dropout 0.6, or VGG16), built with `weights=None`: nothing
is downloaded. ImageNet weights come only from a local file path
(`imagenet_weights`, a `keras.applications` `*_notop.h5` file, loaded
strictly by `klassterfork.weights.init_weights`: every backbone variable
from the file, nothing of the file left over). The flow
stream takes L stacked flow frames (x, y interleaved: 2L channels); its first
conv is initialised from the RGB first-conv kernel averaged over the 3 input
channels and repeated 2L times (Wang et al., TSN cross-modality init).
The output is the late fusion of the two streams: the mean of their logits.
"""

import keras
import numpy as np
from keras import layers

from klassterfork.models.heads import resolve_head
from klassterfork.models.layers import choose
from klassterfork.models.registry import MODELS
from klassterfork.weights import init_weights

BACKBONES = {
    "inception_v3": (keras.applications.InceptionV3, 0.6),
    "vgg16": (keras.applications.VGG16, 0.5),
}


def _backbone(kind, channels, image_size, weights, name):
    """A keras.applications no-top backbone; `weights`: None or a local
    weights file, loaded through `init_weights` (strict)."""
    app, _ = BACKBONES[kind]
    base = app(include_top=False, weights=None, pooling="avg",
               input_shape=(image_size, image_size, channels))
    net = keras.Model(base.input, base.output, name=name)
    if weights is not None:
        init_weights.load_into(net, weights, strict=True)
    return net


def _inflate_first_conv(rgb, flow):
    """Copies `rgb` weights into `flow`; the first conv kernel (kh, kw, 3, F)
    becomes its channel mean repeated to (kh, kw, 2L, F)."""
    for src, dst in zip(rgb.layers, flow.layers):
        weights = src.get_weights()
        if not weights:
            continue
        if isinstance(src, layers.Conv2D) and weights[0].shape != dst.get_weights()[0].shape:
            k = weights[0].mean(axis=2, keepdims=True)
            weights[0] = np.repeat(k, dst.get_weights()[0].shape[2], axis=2)
        dst.set_weights(weights)


@MODELS.register("TwoStream2D")
def TwoStream2D(
    *,
    num_classes,
    backbone="inception_v3",
    image_size=299,
    num_flow_frames=10,
    dropout=None,
    head=None,
    imagenet_weights=None,
    stream="both",
):
    """Two-stream frame classifier (see the module docstring).

    Args:
        num_classes: int. Classes of each stream's ClassificationHead.
        backbone: str. "inception_v3" or "vgg16". Defaults to "inception_v3".
        image_size: int. H = W (InceptionV3 >= 75, VGG16 >= 32).
            Defaults to 299.
        num_flow_frames: int. L stacked flow frames (2L channels).
            Defaults to 10.
        dropout: float or None. Dropout before each head; None: 0.6 for
            InceptionV3, 0.5 for VGG16. Defaults to None.
        head: None, a head name or `{HeadName: {kwargs}}` (one per stream).
        imagenet_weights: str or None. Local `keras.applications` no-top
            weights file for both streams. Defaults to None (random init).
        stream: str. "both" (the fused model), or "rgb" / "flow": one stream
            trained on its own, as the two-stream recipes train them, taking
            the clip pipelines' one-step clips (B, 1, H, W, C) with C = 3 or
            2L. Defaults to "both".

    Returns:
        `keras.Model` with inputs {"rgb": (B, H, W, 3), "flow": (B, H, W, 2L)}
        and outputs {"rgb", "flow", "fused"}: (B, num_classes) logits each;
        "fused" is their mean. With `stream` "rgb" / "flow": input
        (B, 1, H, W, C), output (B, num_classes) logits.
    """
    choose(backbone, tuple(BACKBONES), "backbone")
    choose(stream, ("both", "rgb", "flow"), "stream")
    if dropout is None:
        dropout = BACKBONES[backbone][1]
    if stream != "both":
        channels = 3 if stream == "rgb" else 2 * num_flow_frames
        clip = keras.Input((1, image_size, image_size, channels), name="video")
        net = _backbone(backbone, channels, image_size,
                        imagenet_weights if stream == "rgb" else None, f"{stream}_backbone")
        head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout)
        if head_fn is None:
            raise ValueError("TwoStream2D needs `num_classes` or `head`. "
                             f"Received: num_classes={num_classes!r}")
        frame = layers.Reshape((image_size, image_size, channels), name="frame")(clip)
        return keras.Model(clip, head_fn(net(frame), prefix=f"{stream}_"),
                           name=f"{stream}_stream_{backbone}")
    rgb_in = keras.Input((image_size, image_size, 3), name="rgb")
    flow_in = keras.Input((image_size, image_size, 2 * num_flow_frames), name="flow")
    rgb_net = _backbone(backbone, 3, image_size, imagenet_weights, "rgb_backbone")
    flow_net = _backbone(backbone, 2 * num_flow_frames, image_size, None,
                         "flow_backbone")
    if imagenet_weights is not None:
        _inflate_first_conv(rgb_net, flow_net)
    outputs = {}
    for stream, net, x in (("rgb", rgb_net, rgb_in), ("flow", flow_net, flow_in)):
        head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout)
        if head_fn is None:
            raise ValueError("TwoStream2D fuses scores: `num_classes` or `head` "
                             f"must be set. Received: num_classes={num_classes!r}")
        outputs[stream] = head_fn(net(x), prefix=f"{stream}_")
    outputs["fused"] = layers.Average(name="fused")([outputs["rgb"], outputs["flow"]])
    return keras.Model({"rgb": rgb_in, "flow": flow_in}, outputs,
                       name=f"two_stream_{backbone}")
