"""Independent PyTorch TDN for the import parity test (needs torch).

Written from the TDN repository's `ops/tdn_net.py`, `ops/base_module.py`
(mSE after the fix of issue #6) and `ops/models.py`, channels-first with
torch's own padding; module names follow those files so `state_dict()` keys
are the official checkpoints' keys (`base_model.conv1_temp.weight`,
`base_model.layer2_bak.0.mse.conv3_smallscale2.weight`,
`base_model.layer3_bak.1.shift.conv.weight`, `new_fc.weight`, ...).
Nothing here imports klassterfork. `layers` picks the blocks per stage
((3, 4, 6, 3) is ResNet-50; the tests use (2, 2, 2, 2)).
"""

import torch
from torch import nn
from torch.nn import functional as F


def conv2d(cin, cout, k, stride=1, groups=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


class MSE(nn.Module):
    """Long-term module: bottleneck 1x1 (C -> C / 16), forward / backward
    differences against a depthwise 3x3 of the neighbour, two extra scales,
    a 1x1 back to C, sigmoid - 0.5, out = x + x * gate."""

    def __init__(self, channels, num_segments):
        super().__init__()
        r = channels // 16
        self.n = num_segments
        self.conv1 = conv2d(channels, r, 1)
        self.bn1 = nn.BatchNorm2d(r)
        self.conv2 = conv2d(r, r, 3, groups=r)
        self.conv3 = conv2d(r, channels, 1)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3_smallscale2 = conv2d(r, r, 3)
        self.bn3_smallscale2 = nn.BatchNorm2d(r)
        self.conv3_smallscale4 = conv2d(r, r, 3)
        self.bn3_smallscale4 = nn.BatchNorm2d(r)

    def gate(self, d):
        s2 = self.bn3_smallscale2(self.conv3_smallscale2(F.avg_pool2d(d, 2, 2)))
        s2 = F.interpolate(s2, d.shape[2:])  # nearest
        s4 = self.bn3_smallscale4(self.conv3_smallscale4(d))
        y = self.bn3(self.conv3((d + s2 + s4) / 3.0))
        return torch.sigmoid(y) - 0.5

    def forward(self, x):
        f = self.bn1(self.conv1(x))
        g = self.conv2(f)
        nt = f.shape[0]
        f5 = f.view(nt // self.n, self.n, *f.shape[1:])
        g5 = g.view(nt // self.n, self.n, *g.shape[1:])
        zero = torch.zeros_like(f5[:, :1])
        fwd = torch.cat([g5[:, 1:] - f5[:, :-1], zero], 1).view_as(f)
        bwd = torch.cat([zero, g5[:, :-1] - f5[:, 1:]], 1).view_as(f)
        y = 0.5 * self.gate(fwd) + 0.5 * self.gate(bwd)
        return x + x * y


class Shift(nn.Module):
    """Learnable channel shift: a depthwise Conv1d (kernel 3, pad 1) over
    the segments, initialised as TSM's 1/8-left, 1/8-right shift."""

    def __init__(self, channels, num_segments):
        super().__init__()
        self.n = num_segments
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, groups=channels,
                              bias=False)
        fold = channels // 8
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:fold, 0, 2] = 1
            self.conv.weight[fold:2 * fold, 0, 0] = 1
            self.conv.weight[2 * fold:, 0, 1] = 1

    def forward(self, x):
        nt, c, h, w = x.shape
        v = x.view(nt // self.n, self.n, c, h, w).permute(0, 3, 4, 2, 1)
        v = self.conv(v.reshape(-1, c, self.n))
        v = v.view(nt // self.n, h, w, c, self.n).permute(0, 4, 3, 1, 2)
        return v.reshape(nt, c, h, w)


class Block(nn.Module):
    """fbresnet Bottleneck (biased convs, stride on the 3x3); with
    `num_segments`, mSE + shift after conv1/bn1/relu (BottleneckShift)."""

    def __init__(self, cin, planes, stride=1, num_segments=None):
        super().__init__()
        self.conv1 = conv2d(cin, planes, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(planes)
        if num_segments:
            self.mse = MSE(planes, num_segments)
            self.shift = Shift(planes, num_segments)
        self.conv2 = conv2d(planes, planes, 3, stride, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv2d(planes, planes * 4, 1, bias=True)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride, bias=True),
                nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if hasattr(self, "mse"):
            y = self.shift(self.mse(y))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def stage(cin, planes, blocks, stride, num_segments=None):
    mods = [Block(cin, planes, stride, num_segments)]
    mods += [Block(planes * 4, planes, 1, num_segments) for _ in range(1, blocks)]
    return nn.Sequential(*mods)


class TDNBase(nn.Module):
    """`TDN_Net`: (B * S, 15, H, W) (5 RGB frames per segment) -> (B * S, 2048)
    pooled features (the reference's `fc` is a Dropout after `ops/models.py`
    and its `avgpool` an AdaptiveAvgPool2d(1))."""

    def __init__(self, num_segments, layers=(3, 4, 6, 3)):
        super().__init__()
        self.alpha, self.beta = (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=True)
        self.bn1 = nn.BatchNorm2d(64)
        # Registered, never called; one module under two names.
        self.conv1_temp = nn.Conv2d(3, 64, 7, 2, 3, bias=True)
        self.conv1_temp1 = self.conv1_temp
        self.conv1_5 = nn.Sequential(nn.Conv2d(12, 64, 7, 2, 3, bias=False),
                                     nn.BatchNorm2d(64), nn.ReLU())
        self.resnext_layer1 = stage(64, 64, layers[0], 1)
        self.layer1_bak = stage(64, 64, layers[0], 1)
        self.layer2_bak = stage(256, 128, layers[1], 2, num_segments)
        self.layer3_bak = stage(512, 256, layers[2], 2, num_segments)
        self.layer4_bak = stage(1024, 512, layers[3], 2, num_segments)

    def forward(self, x):
        frames = [x[:, 3 * i:3 * i + 3] for i in range(5)]
        diffs = torch.cat([b - a for a, b in zip(frames[:-1], frames[1:])], 1)
        d = self.conv1_5(F.avg_pool2d(diffs, 2, 2))
        d = F.max_pool2d(d, 3, 2, 1)
        d1 = self.resnext_layer1(d)
        y = F.max_pool2d(F.relu(self.bn1(self.conv1(frames[2]))), 3, 2, 1)
        y = self.alpha * y + self.beta * F.interpolate(d, y.shape[2:])
        y = self.layer1_bak(y)
        y = self.alpha * y + self.beta * F.interpolate(d1, y.shape[2:])
        y = self.layer4_bak(self.layer3_bak(self.layer2_bak(y)))
        return y.mean((2, 3))


class TDN(nn.Module):
    """`ops/models.py` TSN around `TDN_Net`: (B, S * 15, H, W) -> (B, classes),
    the new_fc scores averaged over segments."""

    def __init__(self, num_classes, num_segments, layers=(3, 4, 6, 3)):
        super().__init__()
        self.num_segments = num_segments
        self.base_model = TDNBase(num_segments, layers)
        self.new_fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        out = self.new_fc(self.base_model(x.reshape(-1, 15, *x.shape[-2:])))
        return out.view(-1, self.num_segments, out.shape[-1]).mean(1)
