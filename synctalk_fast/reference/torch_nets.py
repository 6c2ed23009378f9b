"""PyTorch re-statement of the SyncTalk_2D networks (numerics §5), for tests and the benchmark (the PyTorch reference loop).

Written from the specification with the reference's module structure, so
that its state_dict keys are the checkpoint's and `load_state_dict(strict=True)`
checks them. Independent of synctalk_fast's ONNX builder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, use_res_connect, expand_ratio=2):
        super().__init__()
        hid = inp * expand_ratio
        self.use_res_connect = use_res_connect
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hid, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class DoubleConvDW(nn.Module):
    def __init__(self, in_channels, out_channels, stride=2):
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(in_channels, out_channels, stride, False),
            InvertedResidual(out_channels, out_channels, 1, True),
        )

    def forward(self, x):
        return self.double_conv(x)


class InConvDw(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(in_channels, out_channels, 1, False))

    def forward(self, x):
        return self.inconv(x)


class Down(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(in_channels, out_channels, stride=2))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConvDW(in_channels, out_channels, stride=1)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x1, x2], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class AudioConv(nn.Module):
    """ave (input 32x16x16), hubert (32x32x32: conv3 stride 2), wenet (256x16x32)."""

    def __init__(self, mode):
        super().__init__()
        ch = [32, 64, 128, 256, 512]
        if mode == "wenet":
            self.conv1 = InvertedResidual(ch[3], ch[3], 1, True)
            self.conv2 = InvertedResidual(ch[3], ch[3], 1, True)
            self.conv3 = nn.Conv2d(ch[3], ch[3], kernel_size=3, padding=1, stride=(1, 2))
        else:
            self.conv1 = InvertedResidual(32, ch[1], 1, False)
            self.conv2 = InvertedResidual(ch[1], ch[2], 1, False)
            self.conv3 = nn.Conv2d(ch[2], ch[3], kernel_size=3, padding=1, stride=2 if mode == "hubert" else 1)
        self.bn3 = nn.BatchNorm2d(ch[3])
        self.conv4 = InvertedResidual(ch[3], ch[3], 1, True)
        self.conv5 = nn.Conv2d(ch[3], ch[4], kernel_size=3, padding=3, stride=2)
        self.bn5 = nn.BatchNorm2d(ch[4])
        self.relu = nn.ReLU()
        self.conv6 = InvertedResidual(ch[4], ch[4], 1, True)
        self.conv7 = InvertedResidual(ch[4], ch[4], 1, True)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = self.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class UNet(nn.Module):
    def __init__(self, mode="ave", n_channels=6):
        super().__init__()
        ch = [32, 64, 128, 256, 512]
        self.audio_model = AudioConv(mode)
        self.fuse_conv = nn.Sequential(DoubleConvDW(ch[4] * 2, ch[4], stride=1), DoubleConvDW(ch[4], ch[3], stride=1))
        self.inc = InConvDw(n_channels, ch[0])
        self.down1 = Down(ch[0], ch[0])
        self.down2 = Down(ch[0], ch[1])
        self.down3 = Down(ch[1], ch[2])
        self.down4 = Down(ch[2], ch[3])
        self.down5 = Down(ch[3], ch[4])
        self.up1 = Up(ch[4], ch[3] // 2)
        self.up2 = Up(ch[3], ch[2] // 2)
        self.up3 = Up(ch[2], ch[1] // 2)
        self.up4 = Up(ch[1], ch[0])
        self.up5 = Up(ch[1], ch[0] // 2)
        self.outc = OutConv(ch[0] // 2, 3)

    def forward(self, x, audio_feat):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        x6 = self.fuse_conv(torch.cat([x6, self.audio_model(audio_feat)], dim=1))
        x = self.up1(x6, x5)
        x = self.up2(x, x4)
        x = self.up3(x, x3)
        x = self.up4(x, x2)
        x = self.up5(x, x1)
        return torch.sigmoid(self.outc(x))


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class AudioEncoder(nn.Module):
    """Keys without the `audio_encoder.` prefix: the standalone checkpoint."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1),
            ConvBlock(32, 32, 3, 1, 1, residual=True),
            ConvBlock(32, 32, 3, 1, 1, residual=True),
            ConvBlock(32, 64, 3, (3, 1), 1),
            ConvBlock(64, 64, 3, 1, 1, residual=True),
            ConvBlock(64, 64, 3, 1, 1, residual=True),
            ConvBlock(64, 128, 3, 3, 1),
            ConvBlock(128, 128, 3, 1, 1, residual=True),
            ConvBlock(128, 128, 3, 1, 1, residual=True),
            ConvBlock(128, 256, 3, (3, 2), 1),
            ConvBlock(256, 256, 3, 1, 1, residual=True),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )

    def forward(self, x):
        return self.layers(x).squeeze(2).squeeze(2)


def load_numpy_state(module: nn.Module, state: dict, prefix: str = "") -> nn.Module:
    """Load a numpy state dict strictly (every key, every shape) and set eval mode."""
    tensors = {prefix + k: torch.from_numpy(v.copy()) for k, v in state.items()}
    module.load_state_dict(tensors, strict=True)
    return module.eval()
