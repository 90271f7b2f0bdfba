"""Speed of the complete training step (clips/s) and where its time goes.

The step measured is the trainer's own: batched reads from the feature cache, spectrum correction,
deltas + standardisation, SpecAugment, mixup (the data path), then `dsmn.training.step.train_step`
(forward, both PCGrad backward passes, projection, optimiser step), model1, batch 32. Phases are
timed with hooks on the network (forward) and the optimiser (step), so the measured code is exactly
the training code; on a GPU every mark synchronises first.

Variants are printed side by side, with a plain float forward+backward of model1 as a yardstick
measured in the same run (docs/benchmarks.md gives it as ~116 clips/s channels-last on an idle 2-core
machine, where the authors' full step runs at ~27 clips/s). These machines are shared: compare
the ratios, not the absolute numbers of one run. The last lines put each variant against the
authors' step through the yardstick (their step is 27/116 of it on the reference machine), which
stays meaningful when the machine is slower or busier than the reference one.

    python benchmarks/training_speed.py --data DIR [--threads 2] [--steps 12] [--variants faithful shared]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dsmn import models
from dsmn.data import load_dataset
from dsmn.training import load_config
from dsmn.training import step as step_module
from dsmn.training.augment import correction_vectors
from dsmn.training.config import TrainConfig
from dsmn.training.data import (
    BatchReader,
    LogMelRows,
    clip_table,
    epoch_batches,
    frontend_for,
    open_cache,
    parallel_rows,
    take_rows,
)
from dsmn.training.pipeline import EpochRandomness, TrainingInputs, to_layout
from dsmn.training.qat import QATSchedule
from dsmn.training.step import StepSettings, train_step
from dsmn.training.trainer import build_optimizer

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "faithful": ("recipe: QAT, PCGrad full (two backward passes)", []),
    "faithful-float": ("same, float epochs before qat.start_epoch (float_until_start)", ["qat.enabled=false"]),
    "shared": ("QAT, PCGrad on the shared representation (one trunk backward)",
               ["multitask.pcgrad=shared-representation"]),
    "shared-float": ("float, PCGrad on the shared representation",
                     ["multitask.pcgrad=shared-representation", "qat.enabled=false"]),
    "sum": ("QAT, summed losses (no PCGrad, one backward)", ["multitask.mode=sum"]),
    "faithful-contiguous": ("recipe without channels-last memory layout", ["channels_last=false"]),
}
DEFAULT_VARIANTS = ("faithful", "faithful-float", "shared", "shared-float", "sum")
PHASES = ("data", "forward", "backward", "optimizer", "other")
AUTHORS_STEP = 27.0  # reference figure (docs/benchmarks.md): the authors' complete step, clips/s
REFERENCE_YARDSTICK = 116.0  # reference figure: float model1 forward+backward, channels-last, same machine
TARGET = 40.0  # issue: >= 1.5x the authors' step


@dataclass
class Timing:
    name: str
    description: str
    step_seconds: float  # median wall seconds per step
    cpu_seconds: float  # median CPU seconds (all threads) per step: robust to other processes' load
    phases: dict[str, float]  # median wall seconds per phase
    projection: float  # median seconds spent in the PCGrad projection (inside `backward`)
    batch: int

    @property
    def clips_per_second(self) -> float:
        return self.batch / self.step_seconds

    @property
    def clips_per_cpu_second(self) -> float:
        return self.batch / self.cpu_seconds


class Clock:
    """Timestamps on the training device's timeline (synchronises CUDA before reading the time)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: dict[str, float] = {}

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks[name] = self.now()


def build(config: TrainConfig, data: Path, device: torch.device):  # noqa: ANN201
    """The trainer's data path, model and optimiser for `config` (as dsmn.training.trainer builds them)."""
    entry = models.entry(config.model)
    dataset = load_dataset(data)
    clips = dataset.split(config.data.train_split)
    cache = open_cache(dataset, frontend_for(entry.frontend), progress=False)
    table = clip_table(clips, cache.rows(clips))
    # read every batch from the cache, unless `data.preload=always` (what the trainer does on a GPU)
    source = LogMelRows(cache.logmels, table.rows, device, preload=config.data.preload == "always")
    reader = BatchReader(table, source, "a", workers=config.data.workers)
    ref, other = parallel_rows(table, "a")
    vectors = torch.from_numpy(correction_vectors(take_rows(cache.logmels, ref), take_rows(cache.logmels, other)))
    inputs = TrainingInputs(config, entry.deltas, vectors.to(device))
    torch.manual_seed(0)
    model = models.create(config.model, **config.model_kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    qat = QATSchedule(config.qat, config.epochs)
    net = qat.prepare(model) if qat.enabled else model
    qat.start_epoch(net, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, params)
    settings = StepSettings.for_run(config, model, params)  # the trainer's own step settings
    return table, reader, inputs, net, optimizer, settings


def measure(name: str, data: Path, device: torch.device, steps: int, warmup: int, extra: list[str]) -> Timing:
    description, overrides = VARIANTS[name]
    config = load_config("model1", [*overrides, *extra])
    return split_step(name, description, config, build(config, data, device), device, steps, warmup)


def split_step(name: str, description: str, config: TrainConfig, parts: tuple, device: torch.device,
               steps: int, warmup: int) -> Timing:
    """Median time of the step and of its phases over `steps` steps (after `warmup`), from `build`'s parts."""
    table, reader, inputs, net, optimizer, settings = parts
    clock = Clock(device)
    handles = [
        net.register_forward_pre_hook(lambda *_: clock.mark("forward_start")),
        net.register_forward_hook(lambda *_: clock.mark("forward_end")),
        optimizer.register_step_pre_hook(lambda *_: clock.mark("step_start")),
        optimizer.register_step_post_hook(lambda *_: clock.mark("step_end")),
    ]
    projection = []
    real_pcgrad = step_module.pcgrad

    def timed_pcgrad(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = clock.now()
        out = real_pcgrad(*args, **kwargs)
        projection.append(clock.now() - start)
        return out

    step_module.pcgrad = timed_pcgrad
    rng = EpochRandomness.create(0, 0, 0, device)
    batches = step_batches(len(table), config.batch_size, warmup + steps)
    rows: list[dict[str, float]] = []
    net.train()
    try:
        iterator = iter(reader(batches))
        for k in range(warmup + steps):
            start, start_cpu = clock.now(), time.process_time()
            raw = next(iterator)
            x, scene, coarse, _ = inputs(raw, 0, rng)
            clock.mark("data_end")
            projection_before = len(projection)
            train_step(net, x, scene, coarse, optimizer, settings)
            end = clock.now()
            m = clock.marks
            phases = {"data": m["data_end"] - start, "forward": m["forward_end"] - m["forward_start"],
                      "backward": m["step_start"] - m["forward_end"], "optimizer": m["step_end"] - m["step_start"]}
            phases["other"] = (end - start) - sum(phases.values())
            phases["total"] = end - start
            phases["cpu"] = time.process_time() - start_cpu
            phases["projection"] = sum(projection[projection_before:])
            if k >= warmup:
                rows.append(phases)
    finally:
        step_module.pcgrad = real_pcgrad
        for handle in handles:
            handle.remove()
    median = {key: statistics.median(r[key] for r in rows) for key in (*PHASES, "total", "cpu", "projection")}
    return Timing(name, description, median["total"], median["cpu"], {p: median[p] for p in PHASES},
                  median["projection"], config.batch_size)


def step_batches(clips: int, batch_size: int, count: int) -> list:
    """`count` batches of the trainer's (seed 0) order, running over as many epochs as needed."""
    batches: list = []
    epoch = 0
    while len(batches) < count:
        batches += epoch_batches(clips, batch_size, seed=0, epoch=epoch)
        epoch += 1
    return batches[:count]


def yardstick(device: torch.device, steps: int, warmup: int, batch: int = 32) -> tuple[float, float]:
    """Float model1 forward + one backward on a random batch, channels-last: (clips/s, clips per CPU-second)."""
    torch.manual_seed(0)
    model = models.create("model1").to(device).to(memory_format=torch.channels_last)
    x = to_layout(torch.randn(batch, 2, 256, 44, device=device), True)
    clock = Clock(device)
    times, cpu = [], []
    for k in range(warmup + steps):
        start, start_cpu = clock.now(), time.process_time()
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        if k >= warmup:
            times.append(clock.now() - start)
            cpu.append(time.process_time() - start_cpu)
    return batch / statistics.median(times), batch / statistics.median(cpu)


def table(timings: list[Timing], reference: tuple[float, float]) -> str:
    lines = [
        "| variant | clips/s | clips/CPU-s | vs yardstick (CPU) | data+aug | forward | backward (of it: projection) "
        "| optimiser | other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        share = {p: 100 * t.phases[p] / t.step_seconds for p in PHASES}
        lines.append(
            f"| {t.name} | {t.clips_per_second:.1f} | {t.clips_per_cpu_second:.1f} | "
            f"{t.clips_per_cpu_second / reference[1]:.2f} | {share['data']:.1f} % | "
            f"{share['forward']:.1f} % | {share['backward']:.1f} % ({100 * t.projection / t.step_seconds:.1f} %) | "
            f"{share['optimizer']:.1f} % | {share['other']:.1f} % |")
    lines.append(f"\nyardstick (float model1 forward+backward, channels-last, no augmentation): "
                 f"{reference[0]:.1f} clips/s, {reference[1]:.1f} clips/CPU-s")
    for t in timings:
        lines.append(f"- {t.name}: {t.description}")
    lines += ["", "Against the reference figures of docs/benchmarks.md (an idle 2-core machine of this project):",
              f"- the authors' step: {AUTHORS_STEP} clips/s, i.e. {AUTHORS_STEP / REFERENCE_YARDSTICK:.3f} x the "
              "yardstick "
              f"there ({REFERENCE_YARDSTICK} clips/s); this machine's yardstick now: {reference[0]:.1f} clips/s "
              f"(speed factor {reference[0] / REFERENCE_YARDSTICK:.2f})"]
    for t in timings:
        ratio = (t.clips_per_second / reference[0]) / (AUTHORS_STEP / REFERENCE_YARDSTICK)
        lines.append(f"- {t.name}: {ratio:.2f}x the authors' step, load-independent (yardstick-relative); "
                     f"{ratio * AUTHORS_STEP:.1f} clips/s at the reference machine's speed (target >= {TARGET})")
    return "\n".join(lines)


def ensure_data(path: str | None) -> Path:
    if path:
        return Path(path)
    from dsmn.data.synth import generate

    root = Path(tempfile.gettempdir()) / "dsmn-bench-tiny"
    if not (root / "meta.csv").is_file():
        print(f"generating tiny TAU-format data in {root} ...", flush=True)
        generate(root, "tiny", seed=0)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset folder (default: generate tiny data in the temp folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="config override applied to every variant")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = ensure_data(args.data)
    extra = [f"device={args.device}", *args.set]
    reference = yardstick(device, args.steps, args.warmup)
    timings = []
    for name in args.variants:
        timings.append(measure(name, data, device, args.steps, args.warmup, extra))
        t = timings[-1]
        print(f"{name}: {t.clips_per_second:.1f} clips/s, {t.clips_per_cpu_second:.1f} clips/CPU-s", flush=True)
    after = yardstick(device, args.steps, args.warmup)  # before and after: the load drifts
    reference = ((reference[0] + after[0]) / 2, (reference[1] + after[1]) / 2)
    report = (f"## Training step speed (model1, batch 32, {args.threads} threads, {device})\n\n"
              + table(timings, reference))
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
