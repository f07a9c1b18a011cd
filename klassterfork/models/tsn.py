"""TSN with a ResNet-50 backbone, and its temporal modules TSM / TDN / MSN.

TSN (Wang et al., ECCV 2016): S segments of a video go through a 2D backbone
as a batch of B * S images; Dropout(0.5) and a Dense (normal init, std 0.001)
classify; the consensus is the average over segments. Here the pooled
features are averaged over segments (and clips) before the head: for the
linear head this equals averaging the segment scores at inference.

Backbone: torchvision's ResNet-50 (stride on the 3x3 conv, convs without bias,
BN epsilon 1e-5; 23,508,032 parameters without fc), torch padding made
explicit. `stride_in_1x1=True` moves the stride of the first block of stages
2-4 to its 1x1 `conv1`: ResNet v1 as keras.applications' ResNet50 builds it
(there a 1x1 stride-2 "valid" conv; the 3x3 stays "same" at stride 1; the
stem's 7x7 and max pool are padded alike in both), so its ImageNet weights
compute keras.applications' function here. Variable names and shapes are
those of the default. Temporal modules (`temporal=`):

- "none": plain TSN.
- "tsm": TSM (Lin et al., ICCV 2019): `TemporalShift` of 1/8 of the channels
  each way at the input of every residual branch (shortcut unshifted).
- "tdn": TDN (Wang et al., CVPR 2021), the reference `tdn_net.py` over the
  Cadene `fbresnet50` (the same layout, but every backbone conv has a bias).
  Each segment has F = 5 frames. Short-term module: the 4 consecutive frame
  differences (12 channels) -> AvgPool 2x2 -> Conv 12->64 k7 s2 (no bias) ->
  BN -> ReLU -> MaxPool 3 s2 -> fused as alpha * x + beta * up(diff) after the
  stem's max pool, and again after layer1 through its own copy of layer1;
  alpha = beta = 0.5 for 8 segments (0.75 / 0.25 otherwise). The centre frame
  feeds the RGB stem. Long-term module (mSE) after conv1/BN/ReLU of every
  block of layers 2-4, followed by a learnable channel shift (`LearnableShift`).
  The mSE follows the reference after its fix of MCG-NJU/TDN issue #6 (the
  backward small-scale branch convolves the backward difference; the first
  release fed it the forward branch's output).
  `conv1_temp`: the reference registers a second stem conv (3->64 k7 with
  bias, 9,472 parameters; also under the name `conv1_temp1`) that its
  forward never uses. It is kept here as `UnusedConv2D` for checkpoint
  parity; receives no gradient (`tape.gradient` gives None, which Keras
  optimizers drop with a warning, so no update and no weight decay touches
  it, as PyTorch skips parameters whose `.grad` is None; on the JAX backend
  `jax.grad` gives zeros instead, so decoupled weight decay shrinks it
  there). Trainable count 24,420,046 at 174 classes, the reference's.
- "msn": MSNet (Kwon et al., ECCV 2020): the TSM shifts plus the
  MotionSqueeze module after stage 2 (`models/msn.py`, which documents its
  deviation from the reference: no deformable / custom-kernel sampling).
"""

import keras
from keras import layers

from klassterfork.models.heads import resolve_head
from klassterfork.models.layers import (
    BN_EPSILON,
    BN_MOMENTUM,
    FoldClips,
    MeanOverClips,
    batch_norm,
    choose,
    he_fan_out,
)
from klassterfork.models.msn import ms_module
from klassterfork.models.registry import MODELS
from klassterfork.models.temporal import (
    FoldSegments,
    LearnableShift,
    ResizeNearestLike,
    SegmentFrames,
    TemporalDifference,
    TemporalShift,
)

TEMPORAL = ("none", "tsm", "tdn", "msn")
# depth -> bottleneck blocks per stage; 26 is a small variant for tests.
STAGE_BLOCKS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)
TDN_FRAMES = 5
MSE_REDUCTION = 16


def conv2d(x, filters, kernel_size, *, strides=1, use_bias=False, name):
    """Conv2D with torch's symmetric padding `kernel_size // 2`.

    (B, H, W, C) -> (B, H', W', filters), H' = (H + 2 (k // 2) - k) // s + 1.
    """
    pad = kernel_size // 2
    if strides != 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=use_bias,
        kernel_initializer=he_fan_out(),
        name=name,
    )(x)


def max_pool(x, name):
    """torch MaxPool2d(3, 2, padding=1); zero padding is exact after ReLU."""
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name=name)(x)


def mse_module(x, *, num_segments, name):
    """TDN's long-term module (mSE): (B * S, H, W, C) -> same.

    y = bn1(conv1x1(x)), C -> C / 16; g = depthwise 3x3(y); forward and
    backward differences d = g[t +- 1] - y[t]; each is the mean of itself,
    up(bn(conv3x3(avgpool2(d)))) and bn(conv3x3(d)) (the 3x3 convs and BNs
    shared by both directions), then bn3(conv1x1 C / 16 -> C),
    sigmoid - 0.5; out = x + x * (0.5 y_fwd + 0.5 y_bwd).
    """
    reduced = x.shape[-1] // MSE_REDUCTION
    y = layers.Conv2D(reduced, 1, use_bias=False, name=f"{name}_conv1")(x)
    y = batch_norm(y, f"{name}_bn1")
    g = layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                               name=f"{name}_conv2")(y)
    conv_s2 = layers.Conv2D(reduced, 3, padding="same", use_bias=False,
                            name=f"{name}_conv3_smallscale2")
    bn_s2 = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      name=f"{name}_bn3_smallscale2")
    conv_s4 = layers.Conv2D(reduced, 3, padding="same", use_bias=False,
                            name=f"{name}_conv3_smallscale4")
    bn_s4 = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      name=f"{name}_bn3_smallscale4")
    conv3 = layers.Conv2D(x.shape[-1], 1, use_bias=False, name=f"{name}_conv3")
    bn3 = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                    name=f"{name}_bn3")
    gates = []
    for direction in ("forward", "backward"):
        d = TemporalDifference(num_segments, direction,
                               name=f"{name}_diff_{direction}")([y, g])
        s2 = layers.AveragePooling2D(2, name=f"{name}_pool2_{direction}")(d)
        s2 = bn_s2(conv_s2(s2))
        s2 = ResizeNearestLike(name=f"{name}_up2_{direction}")([s2, d])
        s4 = bn_s4(conv_s4(d))
        mixed = layers.Average(name=f"{name}_mix_{direction}")([d, s2, s4])
        gate = layers.Activation("sigmoid", name=f"{name}_sigmoid_{direction}")(
            bn3(conv3(mixed)))
        gates.append(layers.Rescaling(1.0, offset=-0.5,
                                      name=f"{name}_centre_{direction}")(gate))
    y = layers.Average(name=f"{name}_gate")(gates)
    xy = layers.Multiply(name=f"{name}_excite")([x, y])
    return layers.Add(name=f"{name}_out")([x, xy])


def bottleneck(x, planes, *, stride, use_bias, temporal, num_segments, name,
               stride_in_1x1=False):
    """torchvision Bottleneck (expansion 4) with an optional temporal module.

    (B * S, H, W, C_in) -> (B * S, H / stride, W / stride, 4 planes). The
    stride is on the 3x3 `conv2` (v1.5), or on the 1x1 `conv1` with
    `stride_in_1x1` (v1, keras.applications).
    """
    stride1, stride2 = (stride, 1) if stride_in_1x1 else (1, stride)
    shortcut = x
    if temporal in ("tsm", "msn"):
        x = TemporalShift(num_segments, name=f"{name}_shift")(x)
    y = conv2d(x, planes, 1, strides=stride1, use_bias=use_bias, name=f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(y, f"{name}_bn1"))
    if temporal == "tdn":
        y = mse_module(y, num_segments=num_segments, name=f"{name}_mse")
        y = LearnableShift(num_segments, name=f"{name}_shift")(y)
    y = conv2d(y, planes, 3, strides=stride2, use_bias=use_bias, name=f"{name}_conv2")
    y = layers.ReLU(name=f"{name}_relu2")(batch_norm(y, f"{name}_bn2"))
    y = conv2d(y, planes * 4, 1, use_bias=use_bias, name=f"{name}_conv3")
    y = batch_norm(y, f"{name}_bn3")
    if stride != 1 or shortcut.shape[-1] != planes * 4:
        shortcut = conv2d(shortcut, planes * 4, 1, strides=stride, use_bias=use_bias,
                          name=f"{name}_downsample_conv")
        shortcut = batch_norm(shortcut, f"{name}_downsample_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_stage(x, s, num_blocks, *, use_bias, temporal, num_segments, prefix="",
                 stride_in_1x1=False):
    for b in range(1, num_blocks + 1):
        x = bottleneck(
            x, WIDTHS[s - 1], stride=2 if (s > 1 and b == 1) else 1,
            use_bias=use_bias, temporal=temporal, num_segments=num_segments,
            name=f"{prefix}stage{s}_block{b}", stride_in_1x1=stride_in_1x1,
        )
    return x


@keras.saving.register_keras_serializable(package="klassterfork")
class UnusedConv2D(layers.Layer):
    """The kernel and bias of a Conv2D that no output depends on.

    Kept for checkpoint parity; receives no gradient. TDN's reference
    registers a conv its forward never calls (`conv1_temp`); holding its
    weights keeps the trainable count and a checkpoint one-to-one. The call
    returns its input unchanged, (B, H, W, C) -> same, and computes nothing.

    Args:
        filters: int. Output channels of the would-be conv.
        kernel_size: int. Square kernel size.
        use_bias: bool. Also hold a bias. Defaults to True.

    Weights: `kernel` (kernel_size, kernel_size, C, filters), `bias`
    (filters,).
    """

    def __init__(self, filters, kernel_size, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.use_bias = filters, kernel_size, use_bias

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, input_shape[-1], self.filters), initializer=he_fan_out(),
            name="kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.filters,), initializer="zeros", name="bias"
            )

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "use_bias": self.use_bias}


def _fuse(x, diff, alpha, beta, name):
    diff = ResizeNearestLike(name=f"{name}_up")([diff, x])
    x = layers.Rescaling(alpha, name=f"{name}_alpha")(x)
    diff = layers.Rescaling(beta, name=f"{name}_beta")(diff)
    return layers.Add(name=name)([x, diff])


@MODELS.register("TSN")
def TSN(
    *,
    num_classes,
    temporal="none",
    num_segments=8,
    input_shape=None,
    depth=50,
    dropout=0.5,
    init_std=0.001,
    head=None,
    stride_in_1x1=False,
):
    """TSN / TSM / TDN over a ResNet-50 (see the module docstring).

    Args:
        num_classes: int or None. Classes of the default ClassificationHead;
            None with `head=None` returns the (B, 2048) features.
        temporal: str. "none", "tsm", "tdn" or "msn". Defaults to "none".
        num_segments: int. Segments per video (S). Defaults to 8.
        input_shape: tuple or None. (S * F, H, W, 3), or
            (clips, S * F, H, W, 3); F = 1 frame per segment, 5 for "tdn".
            Defaults to (S * F, 224, 224, 3).
        depth: int. ResNet depth: 50, or 26 (2 blocks per stage, for
            tests and benchmarks). Defaults to 50.
        dropout: float. Dropout before the head. Defaults to 0.5.
        init_std: float. Normal init std of the head's Dense.
            Defaults to 0.001.
        head: None, a head name or `{HeadName: {kwargs}}`. Defaults to None.
        stride_in_1x1: bool. Put the stride of the first block of stages 2-4
            on its 1x1 `conv1` (ResNet v1, keras.applications' ResNet50)
            instead of the 3x3 `conv2` (torchvision's v1.5, the default and
            the TSN / TSM / TDN references' layout). Set it when starting
            from keras.applications' ImageNet ResNet50 weights and its
            function is wanted (config:
            `model: {TSN: {stride_in_1x1: true}}`); same variables either
            way. Defaults to False.

    Returns:
        `keras.Model`: (B, S * F, H, W, 3) -> (B, num_classes) logits.
        Trainable parameters at 174 classes: 23,864,558 ("none", "tsm"),
        24,420,046 ("tdn", with its unused `conv1_temp`), "tsm" + 70,785
        MotionSqueeze ("msn").

    Raises:
        ValueError: unknown `temporal` / `depth`, a `stride_in_1x1` that is
            not a bool, or a frame count that is not `num_segments * F`.
    """
    choose(temporal, TEMPORAL, "temporal")
    choose(stride_in_1x1, (False, True), "stride_in_1x1")
    blocks = STAGE_BLOCKS[choose(depth, tuple(STAGE_BLOCKS), "depth")]
    frames = TDN_FRAMES if temporal == "tdn" else 1
    if input_shape is None:
        input_shape = (num_segments * frames, 224, 224, 3)
    input_shape = tuple(input_shape)
    if input_shape[-4] != num_segments * frames:
        raise ValueError(
            f"`input_shape` must have num_segments * {frames} = "
            f"{num_segments * frames} frames for temporal={temporal!r}. "
            f"Received: input_shape={input_shape}, num_segments={num_segments}"
        )
    head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout,
                           init_std=init_std)
    inputs = keras.Input(shape=input_shape, name="video")
    x, num_clips = inputs, None
    if len(input_shape) == 5:
        x, num_clips = FoldClips(name="fold_clips")(x), input_shape[0]
    x = FoldSegments(num_segments, name="fold_segments")(x)
    use_bias = temporal == "tdn"
    if temporal == "tdn":
        diff = SegmentFrames("difference", name="frame_diff")(x)
        x = SegmentFrames("centre", name="centre_frame")(x)
        x = UnusedConv2D(64, 7, name="conv1_temp")(x)  # identity (module doc)
        diff = layers.AveragePooling2D(2, name="diff_pool")(diff)
        diff = conv2d(diff, 64, 7, strides=2, name="diff_conv1")
        diff = layers.ReLU(name="diff_relu1")(batch_norm(diff, "diff_bn1"))
        diff = max_pool(diff, "diff_maxpool")
    x = conv2d(x, 64, 7, strides=2, use_bias=use_bias, name="conv1")
    x = layers.ReLU(name="relu1")(batch_norm(x, "bn1"))
    x = max_pool(x, "maxpool")
    kwargs = dict(use_bias=use_bias, num_segments=num_segments,
                  stride_in_1x1=stride_in_1x1)
    if temporal == "tdn":
        alpha, beta = (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)
        x = _fuse(x, diff, alpha, beta, "fuse_stem")
        diff = resnet_stage(diff, 1, blocks[0], temporal="none", prefix="diff_",
                            **kwargs)
        x = resnet_stage(x, 1, blocks[0], temporal="none", **kwargs)
        x = _fuse(x, diff, alpha, beta, "fuse_stage1")
    else:
        x = resnet_stage(x, 1, blocks[0], temporal=temporal, **kwargs)
    for s in range(2, 5):
        x = resnet_stage(x, s, blocks[s - 1], temporal=temporal, **kwargs)
        if temporal == "msn" and s == 2:
            x = ms_module(x, num_segments=num_segments, name="msn")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = MeanOverClips(num_segments, name="consensus")(x)
    if num_clips is not None:
        x = MeanOverClips(num_clips, name="clip_mean")(x)
    outputs = head_fn(x) if head_fn is not None else x
    return keras.Model(inputs, outputs, name=f"tsn_{temporal}" if temporal != "none"
                       else "tsn")
