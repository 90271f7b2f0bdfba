"""DCASE Task 1 complexity accounting: parameters used in the forward pass, their memory at the
stored dtype, and MACs for one 1-second clip counted the way the organisers do (torchinfo).

Each registered network is measured on its own 1-s input (its registry entry's `input_shape`, which
follows its front end: the DCASE baseline CNN sees 1 x 40 x 51); anything else on (1, 2, 256, 44).
A 10-s clip (TAU 2020) is classified by its 1-s windows (`dsmn.models.windowing`): ten of them, so its
MACs are exactly ten times one window's (`macs_10s`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torchinfo
from torch import nn

MAX_PARAM_BYTES = 128_000
MAX_MACS = 30_000_000
BYTES_PER_PARAM = {"int8": 1, "fp16": 2, "bf16": 2, "fp32": 4}
CLIP_INPUT_SHAPE = (1, 2, 256, 44)  # one 1-s clip: (batch, log-mel + deltas, mel bins, frames)
LONG_CLIP_SECONDS = 10  # TAU Urban Acoustic Scenes 2020 Mobile clips


@dataclass
class LayerCost:
    name: str
    kind: str
    output_shape: list[int]
    params: int
    macs: int


@dataclass
class ComplexityReport:
    model: str
    dtype: str
    params: int
    param_bytes: int
    macs: int
    windows_10s: int = 10  # 1-s windows a 10-s clip is classified by
    max_param_bytes: int = MAX_PARAM_BYTES
    max_macs: int = MAX_MACS
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def within_limits(self) -> bool:
        return self.param_bytes <= self.max_param_bytes and self.macs <= self.max_macs

    @property
    def macs_10s(self) -> int:
        """MACs of one 10-s clip scored by its 1-s windows (each window costs `macs`)."""
        return self.macs * self.windows_10s

    def to_dict(self, with_layers: bool = True) -> dict:
        out = asdict(self)
        out["within_limits"] = self.within_limits
        out["macs_10s"] = self.macs_10s
        if not with_layers:
            out.pop("layers")
        return out


def clip_input_shape(model: nn.Module) -> tuple[int, ...]:
    """(1, channels, mel, frames) of one 1-s clip for `model`: its registry entry's, else the DSMN input."""
    from dsmn.models.registry import available, entry

    name = getattr(model, "model_name", None)
    if name is not None and name in available():
        return (1, *entry(name).input_shape)
    return CLIP_INPUT_SHAPE


def windows_per_clip(model: nn.Module, seconds: float = LONG_CLIP_SECONDS) -> int:
    """1-s windows a clip of `seconds` is cut into at `model`'s front end (10 for 10 s)."""
    from dsmn.features import FrontEndConfig
    from dsmn.models.registry import available, entry
    from dsmn.models.windowing import window_starts

    name = getattr(model, "model_name", None)
    frontend = FrontEndConfig(**(entry(name).frontend if name is not None and name in available() else {}))
    window = frontend.n_frames(frontend.sample_rate)
    return len(window_starts(frontend.n_frames(round(seconds * frontend.sample_rate)), window, window))


def _executed_modules(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Modules the forward pass actually calls (an unused block must not count)."""
    called: dict[int, nn.Module] = {}

    def record(module: nn.Module, _args: object) -> None:
        called[id(module)] = module

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return list(called.values())


def count_forward_params(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """Number of distinct parameters owned by modules that the forward pass calls (on one clip of
    `input_shape`, by default the model's own 1-s input)."""
    example = torch.zeros(input_shape or clip_input_shape(model))
    seen: set[int] = set()
    total = 0
    for module in _executed_modules(model, example):
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def measure(
    model: nn.Module,
    *,
    dtype: str = "int8",
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
) -> ComplexityReport:
    """Complexity of `model` for one input of `input_shape` (default: the model's own 1-s clip,
    see `clip_input_shape`), parameters stored as `dtype`."""
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"dtype must be one of {', '.join(BYTES_PER_PARAM)}, got {dtype!r}")
    input_shape = input_shape or clip_input_shape(model)
    was_training = model.training
    model.eval()
    try:
        params = count_forward_params(model, input_shape)
        summary = torchinfo.summary(model, input_size=input_shape, verbose=0, device="cpu")
    finally:
        model.train(was_training)
    names = {id(m): n for n, m in model.named_modules()}
    layers = [
        LayerCost(
            name=names.get(id(info.module), info.var_name),
            kind=info.class_name,
            output_shape=list(info.output_size),
            params=0 if info.is_recursive else sum(p.numel() for p in info.module.parameters(recurse=False)),
            macs=int(info.macs),
        )
        for info in summary.summary_list
        if info.is_leaf_layer
    ]
    return ComplexityReport(
        model=name or getattr(model, "model_name", type(model).__name__),
        dtype=dtype,
        params=params,
        param_bytes=params * BYTES_PER_PARAM[dtype],
        macs=int(summary.total_mult_adds),
        windows_10s=windows_per_clip(model),
        layers=layers,
    )


def format_report(report: ComplexityReport, with_layers: bool = True) -> str:
    """Human-readable report: per-layer table, totals and the verdict against the DCASE limits."""
    lines = []
    if with_layers:
        width = max([len(layer.name) for layer in report.layers] + [5])
        lines.append(f"{'layer':<{width}}  {'type':<12} {'output':<18} {'params':>9} {'MACs':>12}")
        for layer in report.layers:
            shape = "x".join(str(s) for s in layer.output_shape)
            lines.append(f"{layer.name:<{width}}  {layer.kind:<12} {shape:<18} {layer.params:>9,} {layer.macs:>12,}")
        lines.append("")
    ok = "yes" if report.param_bytes <= report.max_param_bytes else "NO"
    ok_macs = "yes" if report.macs <= report.max_macs else "NO"
    lines += [
        f"model: {report.model}",
        f"parameters (used in forward): {report.params:,}",
        f"parameter memory ({report.dtype}): {report.param_bytes:,} bytes  (limit {report.max_param_bytes:,}: {ok})",
        f"MACs per 1-s clip: {report.macs:,}  (limit {report.max_macs:,}: {ok_macs})",
        f"MACs per 10-s clip ({report.windows_10s} x 1-s windows): {report.macs_10s:,}",
        f"within DCASE limits: {'yes' if report.within_limits else 'NO'}",
    ]
    return "\n".join(lines)
