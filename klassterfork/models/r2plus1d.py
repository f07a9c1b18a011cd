"""Video ResNets: R(2+1)D, R3D and MC3 (Tran et al., CVPR 2018).

Layer for layer the architecture of torchvision's `r2plus1d_18`, `r3d_18` and
`mc3_18` (`torchvision/models/video/resnet.py`), channels-last:

- stem: R(2+1)D: Conv 3->stem_width (1x7x7, stride 1,2,2, pad 0,3,3) -> BN ->
  ReLU -> Conv stem_width->widths[0] (3x1x1, pad 1,0,0) -> BN -> ReLU.
  R3D / MC3: Conv 3->widths[0] (3x7x7, stride 1,2,2, pad 1,3,3) -> BN -> ReLU.
- stages of BasicBlocks (conv -> BN -> ReLU -> conv -> BN, + shortcut, ReLU);
  the first block of stages 2.. strides by 2 and its shortcut is a 1x1x1
  conv (stride 2 in T, H, W; 1,2,2 for the no-temporal MC3 stages) + BN.
- the (2+1)D conv of a block with `inplanes -> planes` factors a 3x3x3 conv
  into 1x3x3 (stride 1,s,s) -> BN -> ReLU -> 3x1x1 (stride s,1,1) with
  `midplanes = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)`,
  the same midplanes for both convs of the block.
- global average pool -> head.

Convs have no bias; BatchNorm epsilon 1e-5, momentum 0.9 (Keras keeps
`momentum` of the old statistics; torch's 0.1 is the new-batch weight). Where
torch pads a strided conv symmetrically, the model pads explicitly with
`ZeroPadding3D` and convolves `valid` (Keras `same` pads asymmetrically when
the stride is 2), so imported PyTorch weights give the same outputs.
Initialisation follows torchvision: conv kernels He-normal (fan_out), BN
gamma 1 / beta 0, Dense normal(0, 0.01).
"""

import keras
from keras import layers

from klassterfork.models.heads import resolve_head
from klassterfork.models.layers import (
    MeanOverClips,
    batch_norm,
    choose,
    conv3d,
    video_input,
)
from klassterfork.models.registry import MODELS

BLOCK_TYPES = ("2plus1d", "3d", "mc3")


def midplanes(inplanes, planes):
    """Channels between the spatial and temporal conv of a (2+1)D conv."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


def block_conv(x, kind, planes, mid, stride, name):
    """The 3x3x3-equivalent conv of a block; `kind` in 2plus1d/3d/notemporal."""
    if kind == "2plus1d":
        x = conv3d(
            x, mid, (1, 3, 3), strides=(1, stride, stride), padding=(0, 1, 1),
            name=f"{name}_spatial",
        )
        x = batch_norm(x, f"{name}_spatial_bn")
        x = layers.ReLU(name=f"{name}_spatial_relu")(x)
        return conv3d(
            x, planes, (3, 1, 1), strides=(stride, 1, 1), padding=(1, 0, 0),
            name=f"{name}_temporal",
        )
    if kind == "3d":
        return conv3d(x, planes, 3, strides=stride, padding=1, name=name)
    return conv3d(
        x, planes, (1, 3, 3), strides=(1, stride, stride), padding=(0, 1, 1),
        name=name,
    )


def basic_block(x, planes, *, kind, stride, name):
    """torchvision `BasicBlock` (expansion 1) with a `kind` conv builder.

    Args:
        x: (B, T, H, W, C_in) tensor.
        planes: int. Output channels.
        kind: str. "2plus1d", "3d" or "notemporal".
        stride: int. 1 or 2.
        name: str. Prefix `stage{s}_block{b}`.

    Returns:
        (B, T', H', W', planes) tensor.
    """
    inplanes = x.shape[-1]
    mid = midplanes(inplanes, planes)
    shortcut = x
    y = block_conv(x, kind, planes, mid, stride, f"{name}_conv1")
    y = batch_norm(y, f"{name}_bn1")
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = block_conv(y, kind, planes, mid, 1, f"{name}_conv2")
    y = batch_norm(y, f"{name}_bn2")
    if stride != 1 or inplanes != planes:
        ds_stride = (1, stride, stride) if kind == "notemporal" else stride
        shortcut = conv3d(
            x, planes, 1, strides=ds_stride, name=f"{name}_downsample_conv"
        )
        shortcut = batch_norm(shortcut, f"{name}_downsample_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def stem(x, block, width, stem_width):
    """R(2+1)D stem for `block="2plus1d"`, the R3D basic stem otherwise."""
    if block == "2plus1d":
        x = conv3d(
            x, stem_width, (1, 7, 7), strides=(1, 2, 2), padding=(0, 3, 3),
            name="stem_conv1",
        )
        x = batch_norm(x, "stem_bn1")
        x = layers.ReLU(name="stem_relu1")(x)
        x = conv3d(x, width, (3, 1, 1), padding=(1, 0, 0), name="stem_conv2")
        x = batch_norm(x, "stem_bn2")
        return layers.ReLU(name="stem_relu2")(x)
    x = conv3d(
        x, width, (3, 7, 7), strides=(1, 2, 2), padding=(1, 3, 3), name="stem_conv1"
    )
    x = batch_norm(x, "stem_bn1")
    return layers.ReLU(name="stem_relu1")(x)


@MODELS.register("R2Plus1D")
def R2Plus1D(
    *,
    num_classes,
    blocks_per_stage=(2, 2, 2, 2),
    widths=(64, 128, 256, 512),
    stem_width=45,
    block="2plus1d",
    input_shape=(16, 112, 112, 3),
    dropout=0.0,
    head=None,
    name=None,
):
    """Generic video ResNet (R(2+1)D / R3D / MC3) with BasicBlocks.

    The 18-layer torchvision models are `R2Plus1D18`, `R3D18`, `MC3_18`;
    this builder also makes the small demo variants, e.g.
    `R2Plus1D(num_classes=8, blocks_per_stage=(1, 1, 1, 1),
    widths=(16, 32, 64, 128), stem_width=12)`.

    Args:
        num_classes: int or None. Classes of the default ClassificationHead;
            None with `head=None` returns the pooled features.
        blocks_per_stage: tuple of int. BasicBlocks per stage.
            Defaults to (2, 2, 2, 2).
        widths: tuple of int. Channels per stage (the stem outputs
            `widths[0]`). Defaults to (64, 128, 256, 512).
        stem_width: int. Channels between the two R(2+1)D stem convs
            (unused by the 3D stems). Defaults to 45.
        block: str. "2plus1d" (R(2+1)D), "3d" (R3D) or "mc3" (3D convs in
            stage 1, 1x3x3 convs after). Defaults to "2plus1d".
        input_shape: tuple. (T, H, W, C), or (clips, T, H, W, C) to average
            the clips of a video; H, W may be None.
            Defaults to (16, 112, 112, 3).
        dropout: float. Dropout before the default head. Defaults to 0.0.
        head: None, a head name or `{HeadName: {kwargs}}`. Defaults to None
            (ClassificationHead(num_classes, dropout)).
        name: str or None. Model name. Defaults to "r2plus1d" / "r3d" / "mc3".

    Returns:
        `keras.Model`: (B, T, H, W, C) or (B, clips, T, H, W, C) standardized
        frames -> (B, num_classes) logits (or head outputs, or (B, widths[-1])
        features). With several clips, the pooled features are averaged over
        the clips before the head (for the linear head this equals the mean of
        the per-clip logits; an embedding stays unit-norm).

    Raises:
        ValueError: bad `block`, `input_shape` or head.
    """
    choose(block, BLOCK_TYPES, "block")
    if len(blocks_per_stage) != len(widths):
        raise ValueError(
            "`blocks_per_stage` and `widths` must have the same length. Received: "
            f"blocks_per_stage={blocks_per_stage}, widths={widths}"
        )
    head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout)
    inputs, x, num_clips = video_input(input_shape)
    x = stem(x, block, widths[0], stem_width)
    for s, (num_blocks, planes) in enumerate(zip(blocks_per_stage, widths), 1):
        if block == "mc3":
            kind = "3d" if s == 1 else "notemporal"
        else:
            kind = block
        for b in range(1, num_blocks + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            x = basic_block(
                x, planes, kind=kind, stride=stride, name=f"stage{s}_block{b}"
            )
    x = layers.GlobalAveragePooling3D(name="pool")(x)
    if num_clips is not None:
        x = MeanOverClips(num_clips, name="clip_mean")(x)
    outputs = head_fn(x) if head_fn is not None else x
    default = {"2plus1d": "r2plus1d", "3d": "r3d", "mc3": "mc3"}[block]
    return keras.Model(inputs, outputs, name=name or default)


def _resnet18(block, name, num_classes, input_shape, dropout, head):
    return R2Plus1D(
        num_classes=num_classes,
        block=block,
        input_shape=input_shape,
        dropout=dropout,
        head=head,
        name=name,
    )


@MODELS.register("R2Plus1D18")
def R2Plus1D18(*, num_classes, input_shape=(16, 112, 112, 3), dropout=0.0, head=None):
    """torchvision `r2plus1d_18`: 31,505,325 trainable parameters @400 classes.

    Args and Returns: as `R2Plus1D` (blocks (2, 2, 2, 2), widths
    (64, 128, 256, 512), stem width 45, block "2plus1d").
    """
    return _resnet18("2plus1d", "r2plus1d_18", num_classes, input_shape, dropout, head)


@MODELS.register("R3D18")
def R3D18(*, num_classes, input_shape=(16, 112, 112, 3), dropout=0.0, head=None):
    """torchvision `r3d_18`: 33,371,472 trainable parameters @400 classes.

    Args and Returns: as `R2Plus1D` with block "3d".
    """
    return _resnet18("3d", "r3d_18", num_classes, input_shape, dropout, head)


@MODELS.register("MC3_18")
def MC3_18(*, num_classes, input_shape=(16, 112, 112, 3), dropout=0.0, head=None):
    """torchvision `mc3_18`: 11,695,440 trainable parameters @400 classes.

    Args and Returns: as `R2Plus1D` with block "mc3".
    """
    return _resnet18("mc3", "mc3_18", num_classes, input_shape, dropout, head)
