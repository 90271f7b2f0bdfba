"""Training-step throughput on a GPU (or the CPU): clips/s, the time of one 139,620-clip epoch, and
the effect of removing the step's host waits, before and after in the same run.

Built on `training_speed.py`'s step builder (the trainer's own data path, model, optimiser and
`train_step`), with the training features preloaded on the device as the trainer does when they fit.
For each variant, batch size and mode:
- throughput: `--steps` consecutive steps timed as the trainer runs them (the device synchronises only
  at the start and the end, plus the trainer's progress-bar `.item()`), so host and GPU overlap;
- split (mode `after` only): the step's phases as `training_speed.py` splits them (data, forward,
  backward, optimiser); every mark synchronises, so the split's step is slower than the throughput.
Modes:
- `before`: the step as it was before the GPU-wait fixes (a blocking host-to-GPU copy of the batch
  index twice per step, the 10x3 coarse-target matrix copied to the GPU every step, PCGrad's
  per-tensor masks rebuilt every step, the progress bar reading the loss every 10 steps);
- `after`: the current code (indices through pinned memory, non-blocking; the matrix and the masks
  built once; the loss read every 50 steps);
- `compile`: `after` with the network `torch.compile`d (the trainer's `--set compile=true`);
  inductor draws random numbers as eager PyTorch does here (`fallback_random`), so its first steps
  can be compared with `after`'s (column `check`: max |difference| of the first 3 steps' losses and
  accuracy against `after`; `before` should equal `after` up to GPU non-determinism).
Column `speed-up`: against the first mode measured for the same variant and batch (`before`, or
`after` in a run without `before`).

    python benchmarks/gpu_training_speed.py --data DIR --device cuda --batches 32 256 \\
        --variants faithful shared sum --modes before after compile --out speed.md
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dsmn import files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import training_speed as base  # noqa: E402 - the benchmark beside this one

from dsmn.labels import NUM_COARSE, SCENE_TO_COARSE_ID  # noqa: E402
from dsmn.training import augment, load_config  # noqa: E402
from dsmn.training import data as data_module  # noqa: E402
from dsmn.training import step as step_module  # noqa: E402
from dsmn.training.data import RawBatch, take_rows  # noqa: E402
from dsmn.training.distributed import Distributed  # noqa: E402
from dsmn.training.pipeline import EpochRandomness  # noqa: E402
from dsmn.training.step import StepTotals, train_step  # noqa: E402
from dsmn.training.trainer import training_module  # noqa: E402

EPOCH_CLIPS = 139_620  # one epoch of the TAU Urban Acoustic Scenes 2022 Mobile development training set
MODES = ("before", "after", "compile")
CHECK_STEPS = 3


@dataclass
class Cell:
    variant: str
    batch: int
    mode: str
    clips_per_second: float = float("nan")
    warmup_seconds: float = float("nan")  # includes compilation in mode `compile`
    first: torch.Tensor | None = None  # results of the first CHECK_STEPS steps
    error: str | None = None

    @property
    def epoch_seconds(self) -> float:
        return EPOCH_CLIPS / self.clips_per_second


# --- the data path as it was before the GPU-wait fixes (kept here to measure them) --------------


def _legacy_read(self: data_module.BatchReader, index):  # noqa: ANN001, ANN202
    position = torch.from_numpy(index).to(self.source.device)  # pageable copy: the host waits for the GPU
    teacher = None if self.teacher_logits is None else self.teacher_logits[position]
    return RawBatch(_legacy_gather(self.source, index), self.scene_ids[position], self.is_reference[position],
                    teacher)


def _legacy_gather(source: data_module.LogMelRows, index) -> torch.Tensor:  # noqa: ANN001
    if source.preloaded is not None:
        return source.preloaded[torch.from_numpy(index).to(source.device)].float()
    block = torch.from_numpy(take_rows(source.logmels, source.rows[index]))
    if source.device.type == "cuda":
        block = block.pin_memory().to(source.device, non_blocking=True)
    return block.float()


def _legacy_coarse_matrix(device: torch.device | str = "cpu") -> torch.Tensor:
    coarse_ids = torch.tensor(SCENE_TO_COARSE_ID, device=device)  # a host-to-GPU copy every step
    return torch.nn.functional.one_hot(coarse_ids, NUM_COARSE).float()


def _legacy_tensor_reach(grads, params) -> torch.Tensor:  # noqa: ANN001
    return torch.cat([torch.full((p.numel(),), g is not None, dtype=torch.bool, device=p.device)
                      for g, p in zip(grads, params, strict=True)])  # ~100 small launches per task and step


@contextlib.contextmanager
def legacy_host_waits(enabled: bool) -> Iterator[None]:
    """The step as it was before the GPU-wait fixes (same values, more waits and launches)."""
    if not enabled:
        yield
        return
    saved = data_module.BatchReader.read, augment.coarse_matrix, step_module.tensor_reach
    data_module.BatchReader.read, augment.coarse_matrix = _legacy_read, _legacy_coarse_matrix
    step_module.tensor_reach = _legacy_tensor_reach
    try:
        yield
    finally:
        data_module.BatchReader.read, augment.coarse_matrix, step_module.tensor_reach = saved


# --- measurement -----------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(parts: tuple, model: torch.nn.Module, batch: int, device: torch.device, steps: int, warmup: int,
               read_every: int) -> tuple[float, float, torch.Tensor]:
    """(clips/s over `steps` steps, seconds of the warm-up steps, results of the first CHECK_STEPS steps).

    The first step always runs the uncompiled network: a QAT network's observers calibrate on it, and
    a compiled one would otherwise compile twice (once without, once with fake quantisation)."""
    table, reader, inputs, net, optimizer, settings = parts
    rng = EpochRandomness.create(0, 0, 0, device)
    batches = base.step_batches(len(table), batch, warmup + steps)
    totals = StepTotals(device)
    first = []
    net.train()
    model.train()
    started, warm = time.perf_counter(), 0.0
    iterator = iter(reader(batches))
    for k in range(warmup + steps):
        if k == warmup:
            synchronize(device)
            warm, started = time.perf_counter() - started, time.perf_counter()
        step = inputs(next(iterator), 0, rng)
        results = train_step(net if k == 0 else model, step.x, step.scene, step.coarse, optimizer, settings,
                             teacher=step.teacher)
        totals.add(results)  # the trainer's running sums
        if k < CHECK_STEPS:
            first.append(torch.stack(results).detach().clone())
        if k % read_every == 0:
            totals.mean_scene_loss()  # the trainer's progress bar
    synchronize(device)
    return steps * batch / (time.perf_counter() - started), warm, torch.stack(first).float().cpu()


def run_cell(cell: Cell, data: Path, device: torch.device, steps: int, warmup: int, extra: list[str],
             split: list, split_steps: int = 10, backend: str = "inductor") -> None:
    description, overrides = base.VARIANTS[cell.variant]
    compiled = cell.mode == "compile"
    config = load_config("model1", [*overrides, f"batch_size={cell.batch}", f"device={device}",
                                    "data.preload=always", *(["compile=true"] if compiled else []), *extra])
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # same dropout masks as eager: the check compares them
        torch._dynamo.reset()
    parts = base.build(config, data, device)
    net = parts[3]
    model = net
    if compiled:  # as the trainer compiles; another backend only to check this script quickly on a CPU
        model = (training_module(net, Distributed(device=device), config.compile) if backend == "inductor"
                 else torch.compile(net, backend=backend))
    with legacy_host_waits(cell.mode == "before"):
        rate, warm, first = throughput(parts, model, cell.batch, device, steps, max(warmup, 8) if compiled else warmup,
                                       10 if cell.mode == "before" else 50)
    cell.clips_per_second, cell.warmup_seconds, cell.first = rate, warm, first
    if cell.mode == "after":
        split.append((cell.batch, base.split_step(f"{cell.variant} (batch {cell.batch})", description, config,
                                                  parts, device, split_steps, 2)))


def check(cell: Cell, cells: list[Cell]) -> float | None:
    """max |first steps' results - those of `after` (same variant and batch)|; None for `after` itself."""
    after = next((c for c in cells if (c.variant, c.batch, c.mode) == (cell.variant, cell.batch, "after")
                  and c.first is not None), None)
    if cell.mode == "after" or after is None or cell.first is None:
        return None
    return float((cell.first - after.first).abs().max())


def report(cells: list[Cell], split: list, device: torch.device, args: argparse.Namespace) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"### Training-step throughput, model1, {name}, torch {torch.__version__}",
             "", f"{args.steps} timed steps after {args.warmup} warm-up steps (compile: at least 8) per cell, "
             f"features preloaded on the device; epoch = {EPOCH_CLIPS:,} clips / clips per s.", "",
             "| variant | batch | mode | clips/s | ms/step | epoch of 139,620 clips | speed-up | warm-up s | check |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    baseline: dict = {}  # speed-up against the first mode measured (before; in a compile run: after)
    for c in cells:
        if not c.error:
            baseline.setdefault((c.variant, c.batch), c.clips_per_second)
    for c in cells:
        if c.error:
            lines.append(f"| {c.variant} | {c.batch} | {c.mode} | failed: {c.error} | | | | | |")
            continue
        ratio = c.clips_per_second / baseline[(c.variant, c.batch)]
        lines.append(f"| {c.variant} | {c.batch} | {c.mode} | {c.clips_per_second:,.0f} | "
                     f"{1000 * c.batch / c.clips_per_second:.2f} | {c.epoch_seconds:.1f} s | "
                     f"{f'{ratio:.2f}x' if ratio else '-'} | {c.warmup_seconds:.1f} | "
                     f"{'-' if check(c, cells) is None else f'{check(c, cells):.1e}'} |")
    lines += ["", "Variants: " + "; ".join(f"{v}: {base.VARIANTS[v][0]}" for v in dict.fromkeys(c.variant
                                                                                          for c in cells))]
    for batch in sorted({b for b, _ in split}):
        timings = [t for b, t in split if b == batch]
        lines += ["", f"Phase split at batch {batch} (mode after; every phase mark synchronises the device, "
                  "so these steps are slower than the throughput above):", "",
                  "| variant | clips/s | data+aug | forward | backward (of it: projection) | optimiser | other |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for t in timings:
            share = {p: 100 * t.phases[p] / t.step_seconds for p in base.PHASES}
            lines.append(f"| {t.name} | {t.clips_per_second:,.0f} | {share['data']:.1f} % | {share['forward']:.1f} % | "
                         f"{share['backward']:.1f} % ({100 * t.projection / t.step_seconds:.1f} %) | "
                         f"{share['optimizer']:.1f} % | {share['other']:.1f} % |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    files.write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset folder (default: generate tiny data in the temp folder)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--variants", nargs="+", default=["faithful", "shared", "shared-float", "sum"],
                        choices=list(base.VARIANTS))
    parser.add_argument("--modes", nargs="+", default=["before", "after"], choices=MODES)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--split-steps", type=int, default=10, help="timed steps of the phase split (mode after)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of mode compile")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--set", action="append", default=[], help="config override applied to every cell")
    parser.add_argument("--out", help="write the Markdown report here (rewritten after every cell)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = base.ensure_data(args.data)
    cells: list[Cell] = []
    split: list = []
    order = [m for m in MODES if m in args.modes]  # `after` before `compile`: it is the check's reference
    for variant in args.variants:
        for batch in args.batches:
            for mode in order:
                cell = Cell(variant, batch, mode)
                cells.append(cell)
                try:
                    run_cell(cell, data, device, args.steps, args.warmup, args.set, split, args.split_steps,
                             args.compile_backend)
                    print(f"{variant} batch {batch} {mode}: {cell.clips_per_second:,.0f} clips/s "
                          f"(epoch {cell.epoch_seconds:.1f} s, warm-up {cell.warmup_seconds:.1f} s)", flush=True)
                except Exception as error:  # noqa: BLE001 - reported in the table, the other cells still run
                    cell.error = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
                    print(f"{variant} batch {batch} {mode}: FAILED {cell.error}", flush=True)
                if args.out:
                    write_atomic(Path(args.out), report(cells, split, device, args))
    text = report(cells, split, device, args)
    print(text)
    if args.out:
        write_atomic(Path(args.out), text)
    return 1 if any(c.error for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
