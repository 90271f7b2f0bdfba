"""An independent, literal implementation of the DSMN definitions in the authors' module layout
(docs/architecture.md), written from that description only. Tests use it as the reference that
`dsmn.models.load_original` must reproduce; it shares no code with dsmn.models.
"""

from __future__ import annotations

import torch
from torch import nn


class Sparable(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.ch_conv1 = nn.Conv2d(cin, cout, kernel_size=1, groups=cout, bias=False)
        self.sp_conv1 = nn.Conv2d(cout, cout, (3, 1), padding=(2, 0), dilation=(2, 1), groups=cout, bias=False)
        self.sp_conv2 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 2), dilation=(1, 2), groups=cout, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = self.ch_conv1(x)
        return torch.relu(self.norm(self.sp_conv1(x) + self.sp_conv2(x)))


class Eca(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, split: bool) -> None:
        super().__init__()
        self.split = split
        self.dilaconv1 = Sparable(cin, cin)
        self.dilaconv2 = Sparable(cin, cin)
        self.dilaconv3 = Sparable(cin, cin // 2)
        self.conv1 = nn.Conv2d(cin, cin // 2, 1)
        self.conv2 = nn.Conv2d(cin, cin // 2, 1)
        self.conv3 = nn.Conv2d(cin // 2 if split else 3 * cin // 2, cout, 1)
        self.att = Eca()
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        if self.split:
            a1, a2 = x.chunk(2, dim=3)
            x3 = self.dilaconv3(self.dilaconv2(self.dilaconv1(a1)))
            o = self.conv1(a1) + self.conv2(a2) + x3
            pool = (2, 1)
        else:
            x1 = self.dilaconv1(x)
            x3 = self.dilaconv3(self.dilaconv2(x1))
            o = torch.cat((self.conv1(x), self.conv2(x1), x3), dim=1)
            pool = (2, 2)
        o = torch.relu(self.norm(self.conv3(self.att(o))))
        return nn.functional.avg_pool2d(o, pool)


class AuthorsNet(nn.Module):
    def __init__(self, kinds: list[str], channels: list[int], hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 16, 1)
        widths = [16, *channels]
        for k in range(5):
            setattr(self, f"conv{k + 1}", Block(widths[k], widths[k + 1], kinds[k] == "SB"))
        self.conv6 = Block(channels[4], channels[4], True)  # defined, never called
        self.l1 = nn.Linear(sum(channels[1:]), hidden)
        self.l2 = nn.Linear(hidden, 13)

    def forward(self, x):
        x = self.conv(x.transpose(2, 3))
        feats = []
        for k in range(5):
            x = getattr(self, f"conv{k + 1}")(x)
            feats.append(x)
        pooled = torch.cat([nn.functional.adaptive_avg_pool2d(f, 1) for f in feats[1:]], dim=1).flatten(1)
        return self.l2(nn.functional.dropout(torch.relu(self.l1(pooled)), 0.3, self.training))


AUTHORS_DEFINITIONS = {
    "model1": (["SB"] * 5, [24, 32, 64, 64, 64], 100),
    "model2": (["SB"] + ["PB"] * 4, [24, 32, 64, 64, 64], 100),
    "model3": (["PB"] * 5, [24, 32, 64, 64, 64], 100),
    "model4": (["SB"] * 5, [24, 128, 128, 128, 128], 64),
}


def authors_model(name: str, seed: int = 0) -> AuthorsNet:
    """A reference network with random weights and random BatchNorm statistics (a 'trained' state)."""
    torch.manual_seed(seed)
    net = AuthorsNet(*AUTHORS_DEFINITIONS[name])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()
