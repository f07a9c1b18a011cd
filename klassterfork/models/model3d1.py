"""Model3D1: the Something-Something-v2 baseline VGG-style 3D CNN.

TwentyBN's `smth-smth-v2-baseline-with-models` `model3D_1`: 11 Conv3D (with
bias) + BN + ReLU units, no pooling, time never strided:

    block1: 3->32 (k 3x5x5, stride 1,2,2, pad 1,2,2)                  + drop
    block2: 32->64, 64->128 (stride 1,2,2)                             + drop
    block3: 128->128, 128->128, 128->256 (stride 1,2,2)                + drop
    block4: 256->256, 256->256, 256->512 (stride 1,2,2)                + drop
    block5: 512->512, 512->512 (stride 1,2,2)

(k 3x3x3, pad 1 unless stated; drop = SpatialDropout3D(0.2), torch
`Dropout3d`), then the mean over T, H, W -> 512 (`column_units`), the
average over clips, and the head (Dense(174) for SSv2). `Model3D1_224` adds
AvgPool3D (3,1,1), stride (2,1,1), pad (1,0,0) (zeros counted in the mean,
torch's `count_include_pad=True`) after block 2's second conv unit (after its
ReLU, before the dropout) to halve T for 224x224 inputs.
"""

import keras
from keras import layers

from klassterfork.models.heads import resolve_head
from klassterfork.models.layers import MeanOverClips, batch_norm, conv3d, video_input
from klassterfork.models.registry import MODELS

# (block, out channels, spatially strided) per conv unit, in order.
CONV_UNITS = (
    (1, 32, True),
    (2, 64, False), (2, 128, True),
    (3, 128, False), (3, 128, False), (3, 256, True),
    (4, 256, False), (4, 256, False), (4, 512, True),
    (5, 512, False), (5, 512, True),
)
DROPOUT_AFTER_BLOCKS = (1, 2, 3, 4)


def _model3d1(num_classes, input_shape, dropout, spatial_dropout, head, time_pool,
              name):
    head_fn = resolve_head(head, num_classes=num_classes, dropout=dropout)
    inputs, x, num_clips = video_input(input_shape)
    for i, (block, filters, strided) in enumerate(CONV_UNITS):
        conv = i + 1 - [u[0] for u in CONV_UNITS].index(block)  # index in block
        prefix = f"block{block}_conv{conv}"
        kernel, pad = ((3, 5, 5), (1, 2, 2)) if i == 0 else (3, 1)
        x = conv3d(x, filters, kernel, strides=(1, 2, 2) if strided else 1,
                   padding=pad, use_bias=True, name=prefix)
        x = batch_norm(x, f"{prefix}_bn")
        x = layers.ReLU(name=f"{prefix}_relu")(x)
        if time_pool and block == 2 and conv == 2:
            x = layers.ZeroPadding3D(((1, 1), (0, 0), (0, 0)), name="time_pool_pad")(x)
            x = layers.AveragePooling3D((3, 1, 1), strides=(2, 1, 1),
                                        name="time_pool")(x)
        last_of_block = i + 1 == len(CONV_UNITS) or CONV_UNITS[i + 1][0] != block
        if last_of_block and block in DROPOUT_AFTER_BLOCKS and spatial_dropout:
            x = layers.SpatialDropout3D(spatial_dropout, name=f"block{block}_drop")(x)
    x = layers.GlobalAveragePooling3D(name="pool")(x)
    if num_clips is not None:
        x = MeanOverClips(num_clips, name="clip_mean")(x)
    outputs = head_fn(x) if head_fn is not None else x
    return keras.Model(inputs, outputs, name=name)


@MODELS.register("Model3D1")
def Model3D1(*, num_classes, input_shape=(72, 84, 84, 3), dropout=0.0,
             spatial_dropout=0.2, head=None):
    """SSv2 baseline 3D CNN: 23,384,430 trainable parameters @174 classes.

    Args:
        num_classes: int or None. Classes of the default ClassificationHead;
            None with `head=None` returns the (B, 512) features.
        input_shape: tuple. (T, H, W, C) or (clips, T, H, W, C); H, W may be
            None. Defaults to (72, 84, 84, 3).
        dropout: float. Dropout before the head. Defaults to 0.0.
        spatial_dropout: float. SpatialDropout3D rate after blocks 1-4.
            Defaults to 0.2.
        head: None, a head name or `{HeadName: {kwargs}}`. Defaults to None.

    Returns:
        `keras.Model`: (B, T, H, W, 3) -> (B, num_classes) logits. At
        72x84x84 the last feature map is (B, 72, 3, 3, 512).
    """
    return _model3d1(num_classes, input_shape, dropout, spatial_dropout, head,
                     time_pool=False, name="model3d1")


@MODELS.register("Model3D1_224")
def Model3D1_224(*, num_classes, input_shape=(60, 224, 224, 3), dropout=0.0,
                 spatial_dropout=0.2, head=None):
    """`Model3D1` with a temporal AvgPool3D after block 2 (same parameters).

    Args and Returns: as `Model3D1`; defaults to (60, 224, 224, 3) input,
    whose last feature map is (B, 30, 7, 7, 512).
    """
    return _model3d1(num_classes, input_shape, dropout, spatial_dropout, head,
                     time_pool=True, name="model3d1_224")
