"""Independent PyTorch references for the import parity tests and the bench.

Written from the published architectures (torchvision
`models/video/resnet.py`, `models/resnet.py`, the TSM repository's
`temporal_shift.py`, VideoMAE's `modeling_finetune.py`), channels-first,
with torch's own padding; module names follow those files so their
`state_dict()` keys are the checkpoints' keys. Nothing here imports
klassterfork. Needs torch (the importing test skips without it).
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ---- torchvision video ResNets -------------------------------------------


class Conv2Plus1D(nn.Sequential):
    def __init__(self, in_planes, out_planes, midplanes, stride=1):
        super().__init__(
            nn.Conv3d(in_planes, midplanes, (1, 3, 3), (1, stride, stride),
                      (0, 1, 1), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, (3, 1, 1), (stride, 1, 1),
                      (1, 0, 0), bias=False),
        )

    @staticmethod
    def downsample_stride(stride):
        return stride, stride, stride


class Conv3DSimple(nn.Conv3d):
    def __init__(self, in_planes, out_planes, midplanes=None, stride=1):
        super().__init__(in_planes, out_planes, 3, stride, 1, bias=False)

    @staticmethod
    def downsample_stride(stride):
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    def __init__(self, in_planes, out_planes, midplanes=None, stride=1):
        super().__init__(in_planes, out_planes, (1, 3, 3), (1, stride, stride),
                         (0, 1, 1), bias=False)

    @staticmethod
    def downsample_stride(stride):
        return 1, stride, stride


class BasicBlock3D(nn.Module):
    def __init__(self, inplanes, planes, conv_builder, stride=1, downsample=None):
        super().__init__()
        midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        self.conv1 = nn.Sequential(conv_builder(inplanes, planes, midplanes, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, midplanes),
                                   nn.BatchNorm3d(planes))
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + residual)


class VideoResNet(nn.Module):
    """kind: "r2plus1d" | "r3d" | "mc3"; torchvision's 18-layer defaults."""

    def __init__(self, kind="r2plus1d", num_classes=400, layers=(2, 2, 2, 2),
                 widths=(64, 128, 256, 512), stem_width=45):
        super().__init__()
        if kind == "r2plus1d":
            self.stem = nn.Sequential(
                nn.Conv3d(3, stem_width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                nn.BatchNorm3d(stem_width), nn.ReLU(inplace=True),
                nn.Conv3d(stem_width, widths[0], (3, 1, 1), 1, (1, 0, 0), bias=False),
                nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
            builders = [Conv2Plus1D] * 4
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(3, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
            builders = ([Conv3DSimple] * 4 if kind == "r3d"
                        else [Conv3DSimple] + [Conv3DNoTemporal] * 3)
        self.inplanes = widths[0]
        for i, (builder, planes, blocks) in enumerate(zip(builders, widths, layers)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}",
                    self._make_layer(builder, planes, blocks, stride))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def _make_layer(self, builder, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, 1, builder.downsample_stride(stride),
                          bias=False), nn.BatchNorm3d(planes))
        layers = [BasicBlock3D(self.inplanes, planes, builder, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock3D(planes, planes, builder) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):  # (B, C, T, H, W)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ---- torchvision ResNet-50 with TSN / TSM -------------------------------


def tsm_shift(x, num_segments, fold_div=8):
    """TSM `TemporalShift.shift` (zero-filled, not in place)."""
    nt, c, h, w = x.size()
    x = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None, shift=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample
        self.shift = shift  # num_segments for TSM "blockres", else None

    def forward(self, x):
        y = x if self.shift is None else tsm_shift(x, self.shift)
        y = F.relu(self.bn1(self.conv1(y)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class ResNet50TSN(nn.Module):
    """torchvision resnet50 (stride on the 3x3) as a TSN: (B * S, 3, H, W) ->
    per-segment logits averaged over the S segments."""

    def __init__(self, num_classes, num_segments, tsm=False, layers=(3, 4, 6, 3)):
        super().__init__()
        self.num_segments = num_segments
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        shift = num_segments if tsm else None
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                nn.BatchNorm2d(planes * 4))
            mods = [Bottleneck(self.inplanes, planes, stride, downsample, shift)]
            self.inplanes = planes * 4
            mods += [Bottleneck(self.inplanes, planes, shift=shift)
                     for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits = self.fc(x.mean((2, 3)))
        return logits.view(-1, self.num_segments, logits.shape[-1]).mean(1)


# ---- VideoMAE ViT ---------------------------------------------------------


def sinusoid_positions(n, d):
    """VideoMAE `get_sinusoid_encoding_table`, written per element."""
    table = np.array([[p / math.pow(10000, 2 * (j // 2) / d) for j in range(d)]
                      for p in range(n)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)[None]


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (2, 16, 16), (2, 16, 16))

    def forward(self, x):  # (B, 3, T, H, W) -> (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEViT(nn.Module):
    def __init__(self, num_classes, dim=384, depth=12, num_heads=6, num_tokens=1568):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = sinusoid_positions(num_tokens, dim)  # not a parameter
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.fc_norm(x.mean(1)))


def randomize(model, seed=0):
    """Random weights and non-trivial BatchNorm statistics, in place; eval mode.

    Conv / Linear weights ~ N(0, 1 / fan_in) (keeps activations O(1)); BN
    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), running mean ~ N(0, 0.1), running
    var ~ U(0.5, 2); other vectors ~ N(0, 0.1).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=gen) * 1.5 + 0.5)
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # 1-D: BatchNorm / LayerNorm gamma
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()
