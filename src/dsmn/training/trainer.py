"""`train`: the DSMN recipe end to end, from a dataset folder to a run folder.

RUN_DIR/
  config.yaml            the resolved configuration
  checkpoints/best.pt    lowest validation loss so far;  checkpoints/last.pt  end of the last epoch
  metrics.csv, metrics.json, curves.png, tensorboard/

`_train` is the epoch loop in one piece: learning rate and QAT switch -> batches -> augmented inputs
-> `train_step` -> validation -> checkpoints -> logs; `start_run` builds what it works with. A killed
run continues with `resume=True` from last.pt and ends exactly where an uninterrupted run would (data
order and augmentation draws are functions of seed and epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dsmn import models
from dsmn.data import load_dataset, spread
from dsmn.data.holdout import describe_validation, split_holdout
from dsmn.errors import UserError
from dsmn.threads import leftover_threads
from dsmn.training import checkpoints
from dsmn.training.augment import correction_vectors
from dsmn.training.config import TrainConfig, config_from_dict, deep_merge, save_config
from dsmn.training.data import (
    BatchReader,
    ClipTable,
    LogMelRows,
    clip_table,
    epoch_batches,
    frontend_for,
    open_cache,
    parallel_rows,
    take_rows,
)
from dsmn.training.distributed import Distributed, setup, teardown
from dsmn.training.logbook import Logbook
from dsmn.training.pipeline import EpochRandomness, TrainingInputs
from dsmn.training.qat import QATSchedule
from dsmn.training.runlock import RunLock, RunLockedError
from dsmn.training.schedule import EpochLR, schedule_notes
from dsmn.training.step import StepResult, StepSettings, StepTotals, train_step
from dsmn.training.validation import predict_probabilities, validation_metrics
from dsmn.training.warmstart import freeze_except, load_start_qat_state, load_start_weights


class RunExistsError(UserError, RuntimeError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class RunRefusedError(UserError, ValueError):
    """A run that would train nothing useful or silently mix two runs: refused before it starts."""


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite: the run stops, its last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int | None
    best_val_loss: float
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig,
    data: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    allow_changes: bool = False,
) -> RunResult:
    """Train `config.model` on the dataset folder `data`; writes the run folder (see module doc).

    `resume`: continue from run_dir/checkpoints/last.pt when it exists (its saved configuration is
    used, with `overrides` (a nested dict) applied on top). A resume with other data or with
    overrides that change the recipe is refused unless `allow_changes` (then recorded in the run).
    `overwrite`: start afresh in a used folder. One process trains into a folder at a time.
    """
    config.check_trainable()
    dist = setup(config.device)
    lock = RunLock(Path(run_dir))
    try:
        refusal = None
        if dist.is_main:
            try:
                lock.acquire()
            except RunLockedError as error:
                refusal = str(error)
        refusal = dist.broadcast_object(refusal)  # every process stops, none waits at a barrier
        if refusal:
            raise RunLockedError(refusal)
        result = _train(config, Path(data), Path(run_dir), dist, resume, overwrite, overrides or {}, allow_changes)
    except BaseException:
        lock.release()
        teardown(dist, clean=False)
        raise
    lock.release()
    teardown(dist)
    return result


def _train(config: TrainConfig, data: Path, run_dir: Path, dist: Distributed, resume: bool, overwrite: bool,
           overrides: dict[str, Any], allow_changes: bool) -> RunResult:
    """The run: set-up (`start_run`), then the epoch loop, step by step in the order things happen."""
    run = start_run(config, data, run_dir, dist, resume, overwrite, overrides, allow_changes)
    config, d, main = run.config, run.data, dist.is_main
    epoch_bar = _bar(range(run.start_epoch, config.epochs), main and config.progress, initial=run.start_epoch,
                     total=config.epochs, desc="epochs", unit="epoch")
    for epoch in epoch_bar:
        # 1. this epoch's learning rate; QAT switched on (and its observers / BatchNorm set) when due
        lr = run.scheduler.start_epoch(epoch)
        run.enter_qat(epoch)
        # 2. the epoch's random draws and batches: functions of (seed, epoch, rank), so a resumed run repeats them
        rng = EpochRandomness.create(config.seed, epoch, dist.rank, dist.device)
        torch.manual_seed(int(rng.host.integers(2**62)))  # dropout: a function of (seed, epoch, rank) too
        # windows mode on long clips: `windows_per_clip` draws per clip, each a random second of it
        draws = len(d.train_table) * d.windows_per_clip
        batches = epoch_batches(draws, config.batch_size, seed=config.seed, epoch=epoch,
                                rank=dist.rank, world_size=dist.world_size, drop_last=config.drop_last)
        batches = [b % len(d.train_table) for b in batches[: config.max_batches_per_epoch]]
        # 3. batches -> augmented network inputs -> optimisation step
        run.model.train()
        totals = StepTotals(dist.device)
        started, started_cpu = time.perf_counter(), time.process_time()
        batch_bar = _bar(d.reader(batches), main and config.progress, total=len(batches), leave=False,
                         desc=f"epoch {epoch + 1}", unit="batch")
        for k, raw in enumerate(batch_bar):
            step = d.inputs(raw, epoch, rng)
            model = uncompiled(run.model) if run.eager_steps else run.model
            result = train_step(model, step.x, step.scene, step.coarse, run.optimizer, run.settings,
                                teacher=step.teacher)
            check_finite(result, epoch, k, dist, run_dir, data)
            totals.add(result)
            run.eager_steps = max(0, run.eager_steps - 1)
            if main and config.progress and (k % 50 == 0 or k == len(batches) - 1):  # .item() waits for the GPU
                batch_bar.set_postfix(loss=f"{totals.mean_scene_loss():.3f}")
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
        row = training_row(epoch, lr, totals.means(len(batches)), seconds, cpu_seconds,
                           len(batches) * config.batch_size, d.distilling)

        if main:  # 4. validation, checkpoints and logs: rank 0 only (the others hold identical weights)
            with validation_threads(dist):
                probabilities, windows = predict_probabilities(
                    run.net, d.val_table, d.val_source, use_deltas=d.use_deltas, delta_width=config.delta_width,
                    batch_size=config.data.val_batch_size, channels_last=config.channels_last,
                    window_frames=d.window_frames, long_clips=config.data.long_clips)
            row.update(validation_metrics(probabilities, d.val_table, windows))
            improved = run.record_best(row, epoch)
            payload = run.checkpoint(epoch, [*run.logbook.history, row])
            checkpoints.save_atomic(payload, run_dir / "checkpoints" / "last.pt")
            if improved:
                checkpoints.save_atomic(payload, run_dir / "checkpoints" / "best.pt")
            run.logbook.log(row, _best_summary(run.best))
            epoch_bar.set_postfix(val_acc=f"{row['val_accuracy']:.3f}", best=f"{run.best['val_loss']:.3f}")
        dist.barrier()

    history = []
    if run.logbook is not None:
        run.logbook.close()
        history = run.logbook.history
    best = run.best
    return RunResult(run_dir, config.epochs, best["epoch"], best["val_loss"], best["metrics"], history)


def training_row(epoch: int, lr: float, means: dict[str, float], seconds: float, cpu_seconds: float,
                 clips: int, distilling: bool) -> dict[str, Any]:
    """The training half of an epoch's metrics row (validation adds the `val_*` keys)."""
    row = {"epoch": epoch, "lr": lr,
           "train_loss": means["scene_loss"] + means["coarse_loss"] + means["penalty"],
           "train_scene_loss": means["scene_loss"], "train_coarse_loss": means["coarse_loss"],
           "train_penalty": means["penalty"], "train_accuracy": means["accuracy"], "epoch_seconds": seconds,
           "epoch_cpu_seconds": cpu_seconds, "train_clips_per_second": clips / max(seconds, 1e-9)}
    if distilling:  # the T^2-scaled KL terms and the loss actually optimised (label + KD mixed)
        row.update({"kd_loss": means["scene_kd_loss"], "kd_coarse_loss": means["coarse_kd_loss"],
                    "train_objective": means["objective"]})
    return row


@dataclass
class Run:
    """Everything the epoch loop works with: built by `start_run`, fresh or from last.pt."""

    config: TrainConfig
    data: TrainingData
    dist: Distributed
    float_model: nn.Module  # the float network: owns the parameters, is what checkpoints store
    net: nn.Module  # the network that trains: `float_model`, or its QAT version (same parameters)
    model: nn.Module  # `net` wrapped for data-parallel training (DDP) when several processes run
    qat: QATSchedule
    optimizer: torch.optim.Optimizer
    scheduler: EpochLR
    settings: StepSettings
    logbook: Logbook | None  # rank 0 only
    start_epoch: int
    best: dict[str, Any]
    resumes: list[dict[str, Any]]  # the changes each resume made (recorded in the checkpoints)
    eager_steps: int = 0  # steps still to run uncompiled (see `uncompiled`)

    def enter_qat(self, epoch: int) -> None:
        """Prepare the QAT network when `epoch` is the first QAT one (float_until_start), then set its
        switches for the epoch. The QAT network shares the float parameters: the optimiser is unchanged."""
        if self.qat.prepared_by(epoch) and self.net is self.float_model:
            self.net = self.qat.prepare(self.float_model)
            self.model = training_module(self.net, self.dist, self.config.compile)
            self.eager_steps = 1 if self.config.compile else 0
        self.qat.start_epoch(self.net, epoch)

    def record_best(self, row: dict[str, Any], epoch: int) -> bool:
        """Whether this epoch has the lowest validation loss so far. With QAT only epochs that trained
        the fake-quantised network compete: the int8 model is what is reported (matters when QAT starts late)."""
        eligible = not self.qat.enabled or epoch >= self.qat.first_epoch
        improved = eligible and row["val_loss"] < self.best["val_loss"]
        if improved:
            self.best = {"val_loss": row["val_loss"], "epoch": epoch, "metrics": dict(row)}
        return improved

    def checkpoint(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        return checkpoint_payload(self.float_model, self.net, self.qat, self.optimizer, self.scheduler,
                                  self.config, self.data.describe, epoch, history, self.best, self.resumes)


def start_run(config: TrainConfig, data: Path, run_dir: Path, dist: Distributed, resume: bool, overwrite: bool,
              overrides: dict[str, Any], allow_changes: bool) -> Run:
    """Run folder, data, network (QAT-prepared when due), optimiser and schedule; restored from
    checkpoints/last.pt when resuming (refused when the recipe or the data changed, unless allowed)."""
    state = _prepare_run_dir(run_dir, dist, resume, overwrite)
    changes: list[str] = []
    extended: list[str] = []
    if state is not None:  # the saved configuration, with what the command line changes on top
        config = config_from_dict(deep_merge(state["config"], overrides))
        config.check_trainable()
        # the saved settings read through today's schema: a key a newer dsmn added, at its recipe
        # value, is no change (a run from before qat.stochastic_rounding existed resumes as it was)
        changes = recipe_changes(config_from_dict(state["config"]).to_dict(), config.to_dict())
        extended = [c for c in changes if c.split(" ", 1)[0] in RESUME_EXTENSIONS]
    if config.threads:
        torch.set_num_threads(config.threads)
    elif config.data.workers and dist.device.type == "cpu":  # reader threads and torch's team share the cores
        torch.set_num_threads(min(torch.get_num_threads(), leftover_threads(config.data.workers)))
    device, main = dist.device, dist.is_main

    def check_resume(identity: dict[str, Any]) -> None:  # before the feature cache is built for other data
        if state is None:
            return
        changes.extend(data_changes(state, identity))
        refused = [c for c in changes if c not in extended]
        if refused and not allow_changes:
            raise RunRefusedError(
                f"{run_dir} was trained with other settings or data ({'; '.join(refused)}): resume with the "
                "run's own settings, or pass --allow-changes to continue with these (recorded in the run)")

    d = load_training_data(config, data, dist, check_resume)
    resumes = list(state.get("resumes", [])) if state is not None else []
    if changes:
        resumes.append({"epoch": int(state["epoch"]) + 1, "changes": changes})
        if main:
            print(f"note: resuming with changes (recorded in the checkpoints): {'; '.join(changes)}", flush=True)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    torch.manual_seed(config.seed)
    float_model = models.create(config.model, **config.model_kwargs).to(device)
    if config.channels_last:
        float_model = float_model.to(memory_format=torch.channels_last)
    qat = QATSchedule(config.qat, config.epochs)
    start_epoch = 0 if state is None else int(state["epoch"]) + 1
    start = None
    if state is None and config.finetune.checkpoint:  # fine-tuning: start from trained weights
        start = load_start_weights(float_model, config.finetune.checkpoint, config.model)
    if state is not None and "qat_state_dict" not in state:
        float_model.load_state_dict(state["state_dict"])  # saved before QAT began (float_until_start)
    net = qat.prepare(float_model) if qat.prepared_by(start_epoch) else float_model
    if start is not None:
        load_start_qat_state(net, float_model, start)
    if state is not None and "qat_state_dict" in state:
        net.load_state_dict(state["qat_state_dict"])
    freeze_except(float_model, config.finetune.trainable)
    # the float network's order: the QAT network holds the same objects in another order, and the
    # optimiser state of a resumed run must line up whether it was saved before or after QAT began
    params = [p for p in float_model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, params)
    scheduler = EpochLR(optimizer, epochs=config.epochs, base_lr=config.optimizer.lr, schedule=config.schedule)
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": None, "metrics": {}}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoints.restore_rng_state(state["rng"])
        history = list(state.get("metrics", []))
        best = {"val_loss": state["best_val_loss"], "epoch": state.get("best_epoch"),
                "metrics": state.get("best_metrics", {})}
    settings = StepSettings.for_run(config, float_model, params, dist, announce=main)
    logbook = Logbook(run_dir, history) if main else None
    if main:
        print(_banner(config, d.describe, dist, start_epoch), flush=True)
    model = training_module(net, dist, config.compile)
    return Run(config, d, dist, float_model, net, model, qat, optimizer, scheduler, settings, logbook,
               start_epoch, best, resumes, eager_steps=1 if config.compile else 0)


def training_module(net: nn.Module, dist: Distributed, compile_mode: bool | str = False) -> nn.Module:
    """The network as the training step calls it: DDP around it under torchrun, and `torch.compile`d
    when asked (fused kernels, fewer launches: a small network on a GPU is bound by kernel launches).
    Validation and checkpoints use `net` itself, which shares the parameters."""
    model = dist.wrap(net)
    if compile_mode:
        model = torch.compile(model, mode=None if compile_mode in (True, "default") else compile_mode)
    return model


def uncompiled(model: nn.Module) -> nn.Module:
    """The module inside torch.compile's wrapper (DDP stays). The trainer runs a network's first step
    with it: a fresh QAT network's observers calibrate on that step, and compiling it would compile
    the network twice (once without fake quantisation, once with)."""
    return getattr(model, "_orig_mod", model)


def check_finite(step: StepResult, epoch: int, index: int, dist: Distributed, run_dir: Path, data: Path) -> None:
    """Stop at the first NaN / infinite loss, before another step spreads it: name where, and what is kept.

    The weights of this step are already damaged, so nothing of it is saved; last.pt is the end of
    the previous epoch. All processes decide together (a process that raised alone would leave the
    others waiting for it).
    """
    losses = torch.stack([value for name, value in step._asdict().items() if name != "accuracy"])
    bad = (~torch.isfinite(losses)).any().to(torch.float32).reshape(1)
    if float(dist.average_(bad)) == 0.0:
        return
    last = run_dir / "checkpoints" / "last.pt"
    kept = (f"{last} (end of epoch {epoch}) is kept" if epoch > 0 and last.is_file()
            else "no checkpoint was written yet")
    losses = ", ".join(f"{name} {float(value):.4g}" for name, value in
                       (("scene", step.scene_loss), ("coarse", step.coarse_loss), ("penalty", step.penalty)))
    if epoch > 0 and last.is_file():
        advice = (f"lower the learning rate (--lr) or remove the clips that cause it, then resume with `dsmn train "
                  f"--data {data} --out {run_dir} --resume --allow-changes`")
    else:
        advice = ("check the data (`dsmn features` reports unusable clips) and the learning rate (--lr), then "
                  "start again")
    raise NonFiniteLossError(f"training loss is not finite at epoch {epoch + 1}, step {index + 1} ({losses}); "
                             f"stopped, {kept}; {advice}")


RESUME_EXTENSIONS = frozenset({"epochs"})  # a resume may lengthen a run: announced and recorded, not refused
RECIPE_NEUTRAL = frozenset({  # keys that change speed or output, never what is trained
    "progress", "threads", "device", "data.workers", "data.preload", "data.preload_limit_gb", "data.val_batch_size",
    "data.cache_dir"})


def recipe_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """`key old -> new` for every setting that differs between two config dicts (neutral keys ignored)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        name = prefix + key
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and key != "model_kwargs":
            out += recipe_changes(old, new, name + ".")
        elif old != new and name not in RECIPE_NEUTRAL:
            out.append(f"{name} {old!r} -> {new!r}")
    return out


def data_changes(state: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What differs between the clips a run was trained on and the clips given now (a moved dataset is fine)."""
    saved = state.get("data_fingerprint")
    if saved is None or saved == identity["data_fingerprint"]:  # checkpoints of older versions: no record
        return []
    before = state.get("data_clips", {})
    return [f"--data {identity['data']} lists other clips or labels than {state.get('data', 'the run')!s} "
            f"({before.get('train', '?')} training / {before.get('val', '?')} validation clips then, "
            f"{identity['train_clips']} / {identity['val_clips']} now)"]




@contextlib.contextmanager
def validation_threads(dist: Distributed) -> Iterator[None]:
    """While rank 0 validates on the CPU the other processes wait at a barrier: let it use their cores."""
    before = torch.get_num_threads()
    if dist.enabled and dist.device.type == "cpu":
        torch.set_num_threads(before * dist.world_size)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prepare_run_dir(run_dir: Path, dist: Distributed, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: a fresh run); refuses to overwrite a run unasked."""
    last_path = run_dir / "checkpoints" / "last.pt"
    state = None
    if resume and last_path.is_file():
        state = checkpoints.load(last_path)
    elif last_path.exists() and not overwrite:
        raise RunExistsError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite")
    elif overwrite and dist.is_main:
        for stale in ("checkpoints", "tensorboard", "metrics.csv", "metrics.json", "curves.png"):
            target = run_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    dist.barrier()
    return state


@dataclass
class TrainingData:
    """The data side of a run: clip tables, batched cache readers and the augmentation pipeline."""

    train_table: ClipTable
    val_table: ClipTable
    val_source: LogMelRows
    reader: BatchReader
    inputs: TrainingInputs
    use_deltas: bool
    describe: dict[str, Any]
    distilling: bool = False
    window_frames: int = 44  # frames of the network's 1-s input at this front end (44 for DSMN)
    windows_per_clip: int = 1  # draws per training clip and epoch (> 1 only for long clips in windows mode)


def load_training_data(config: TrainConfig, data: Path, dist: Distributed,
                       check: Callable[[dict[str, Any]], None] | None = None) -> TrainingData:
    """Index the dataset, open (rank 0 builds) the feature cache, compute the device responses."""
    entry = models.entry(config.model)
    frontend = frontend_for(entry.frontend)
    use_deltas = entry.deltas if config.deltas is None else config.deltas
    dataset = load_dataset(data)
    train_split = config.data.subset or config.data.train_split
    train_clips = dataset.split(train_split)
    if config.data.validation == "holdout":  # a few training locations per scene, never trained on
        train_clips, val_clips = split_holdout(train_clips, config.data.holdout_locations)
        val_split = f"held-out locations of {train_split}"
    else:  # the authors': the evaluate split itself
        val_clips, val_split = dataset.split(config.data.val_split), config.data.val_split
    train_clips = on_devices(train_clips, config.data.devices)
    val_clips = spread(on_devices(val_clips, config.data.devices), config.data.val_max_clips)
    for clips, split in ((train_clips, train_split), (val_clips, val_split)):
        if not clips:
            devices = f" of device(s) {','.join(config.data.devices)}" if config.data.devices else ""
            raise RunRefusedError(f"{data}: no clips{devices} in the {split} split")
    identity = {"data": str(dataset.root), "data_fingerprint": fingerprint(train_clips, val_clips),
                "train_clips": len(train_clips), "val_clips": len(val_clips)}
    if check is not None:
        check(identity)
    check_batches(config, len(train_clips), len(val_clips), dist, dataset.root)
    if dist.is_main:
        cache = open_cache(dataset, frontend, config.data.cache_dir, progress=config.progress)
    dist.barrier()
    if not dist.is_main:
        cache = open_cache(dataset, frontend, config.data.cache_dir, progress=False)
    train_clips = usable_clips(cache, train_clips, "training", dist.is_main)
    val_clips = usable_clips(cache, val_clips, "validation", dist.is_main)
    check_batches(config, len(train_clips), len(val_clips), dist, dataset.root)
    train_table = clip_table(train_clips, cache.rows(train_clips))
    val_table = clip_table(val_clips, cache.rows(val_clips))
    preload = _preload(config, cache.logmels, len(train_table) + len(val_table))
    train_source = LogMelRows(cache.logmels, train_table.rows, dist.device, preload)
    val_source = LogMelRows(cache.logmels, val_table.rows, dist.device, preload and dist.is_main)
    reference = config.spectrum_correction.reference_device
    correction = None
    device_responses = None
    if config.device_ir.enabled:
        from dsmn.training.device_ir import ir_bank

        device_responses = torch.from_numpy(ir_bank(config.device_ir.folder, frontend)).to(dist.device)
    correct = config.spectrum_correction.enabled and not (config.device_ir.enabled
                                                          and config.device_ir.replace_correction)
    if correct:
        ref_rows, other_rows = parallel_rows(train_table, reference)
    if correct and len(ref_rows):  # none when the run sees one device only
        vectors = correction_vectors(take_rows(cache.logmels, ref_rows), take_rows(cache.logmels, other_rows))
        correction = torch.from_numpy(vectors).to(dist.device)
    if correct and not len(ref_rows) and not config.data.devices and dist.is_main:
        print(f"warning: spectrum correction is on but has 0 vectors: the training clips hold no parallel "
              f"recordings of reference device {reference!r} and another device; it changes nothing "
              "(--set spectrum_correction.enabled=false silences this)", flush=True)
    teacher = teacher_logits(config, train_table)
    # long clips (TAU 2020: 10 s): the cache holds whole clips; windows mode crops a random second per draw
    window_frames = frontend.n_frames(frontend.sample_rate)
    clip_frames = int(cache.logmels.shape[-1])
    windowed = clip_frames > window_frames and config.data.long_clips == "windows"
    describe = {"frontend": asdict(frontend), "deltas": use_deltas, "train_clips": len(train_table),
                "val_clips": len(val_table), "validation": describe_validation(asdict(config.data)),
                "correction_vectors": 0 if correction is None else len(correction),
                "teacher": config.distillation.teacher,
                "device_irs": 0 if device_responses is None else len(device_responses),
                "data": str(dataset.root), "cache_dir": str(cache.directory),
                "data_fingerprint": identity["data_fingerprint"],
                "data_clips": {"train": identity["train_clips"], "val": identity["val_clips"]},
                "clip_frames": clip_frames, "window_frames": window_frames,
                "long_clips": config.data.long_clips if clip_frames > window_frames else None}
    return TrainingData(
        train_table, val_table, val_source,
        BatchReader(train_table, train_source, reference, workers=config.data.workers,
                    teacher_logits=None if teacher is None else teacher.to(dist.device)),
        TrainingInputs(config, use_deltas, correction, device_responses, window_frames if windowed else None),
        use_deltas, describe, teacher is not None, window_frames, config.data.windows_per_clip if windowed else 1,
    )


def teacher_logits(config: TrainConfig, table: ClipTable) -> torch.Tensor | None:
    """(N, 10) teacher scene logits aligned with the training clips, or None without a teacher.
    A table that misses clips, names other classes or holds non-finite values is refused
    (dsmn.distillation.TeacherFileError)."""
    if not config.distillation.teacher:
        return None
    from dsmn.distillation import read_teacher_table

    path = config.distillation.teacher
    logits = read_teacher_table(path).for_clips([c.filename for c in table.clips], path)
    return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))


def usable_clips(cache: Any, clips: list, what: str, announce: bool) -> list:
    """The clips whose features exist; the others (unreadable or non-finite audio) are named and skipped."""
    usable = cache.usable(clips)
    if len(usable) < len(clips) and announce:
        kept = {c.filename for c in usable}
        bad = [c.filename for c in clips if c.filename not in kept]
        reasons = dict(cache.failed)
        examples = "; ".join(f"{name}: {reasons.get(name, 'no features')}" for name in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        print(f"warning: skipping {len(bad)} of {len(clips)} {what} clips with unusable audio ({examples}{more}; "
              f"all listed in {cache.directory / 'failed.json'})", flush=True)
    return usable


def check_batches(config: TrainConfig, train: int, val: int, dist: Distributed, root: Path) -> None:
    """Refuse a run that would validate on nothing or take no training step (it would end without best.pt)."""
    split = config.data.subset or config.data.train_split
    if val == 0:
        raise RunRefusedError(f"{root}: the validation split {config.data.val_split!r} has no usable clips, so no "
                              "epoch could be validated or saved as best.pt; pick another --val-split")
    steps = len(epoch_batches(train, config.batch_size, seed=0, epoch=0, world_size=dist.world_size,
                              drop_last=config.drop_last)) if train else 0
    if steps == 0 or config.max_batches_per_epoch == 0:
        raise RunRefusedError(f"{root}: the training split {split!r} has {train} usable clip(s), no full batch of "
                              f"{config.batch_size}: lower --batch-size or add clips")


def fingerprint(train: list, val: list) -> str:
    """A hash of the training and validation clips and their labels: equal data, equal hash, wherever it lies."""
    digest = hashlib.sha256()
    for part in (train, val):
        for clip in part:
            digest.update(f"{clip.filename}\t{clip.scene}\t{clip.device}\n".encode())
        digest.update(b"--\n")
    return digest.hexdigest()[:16]


def build_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optimizer
    classes = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": torch.optim.SGD}
    if o.name not in classes:
        raise ValueError(f"optimizer.name must be one of {', '.join(classes)}, got {o.name!r}")
    kwargs: dict[str, Any] = {"lr": o.lr, "weight_decay": o.weight_decay}
    if o.implementation == "fused":
        kwargs["fused"] = True
    elif o.implementation == "foreach":
        kwargs["foreach"] = True
    elif o.implementation == "loop":
        kwargs["foreach"] = False
    try:
        return classes[o.name](params, **kwargs)
    except (RuntimeError, TypeError) as error:  # fused is not available for every optimiser / device
        if not kwargs.pop("fused", False):
            raise
        kwargs["foreach"] = True
        import warnings

        warnings.warn(f"fused {o.name} unavailable here ({error}); using foreach", stacklevel=2)
        return classes[o.name](params, **kwargs)


def checkpoint_payload(
    float_model: nn.Module, net: nn.Module, qat: QATSchedule, optimizer: torch.optim.Optimizer,
    scheduler: EpochLR, config: TrainConfig, describe: dict[str, Any], epoch: int,
    history: list[dict[str, Any]], best: dict[str, Any], resumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """dsmn.models.checkpoint_dict of the float network plus all a resumed run needs."""
    extra: dict[str, Any] = {}
    if net is not float_model:
        extra = {"qat": qat.config.to_dict(), "qat_state_dict": net.state_dict()}
    return models.checkpoint_dict(
        float_model,
        **extra,
        frontend=describe["frontend"],
        deltas=describe["deltas"],
        epoch=epoch,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=checkpoints.rng_state(),
        metrics=list(history),
        config=config.to_dict(),
        best_val_loss=best["val_loss"],
        best_epoch=best["epoch"],
        best_metrics=best["metrics"],
        val_metrics=history[-1] if history else {},
        data=describe["data"],
        cache_dir=describe["cache_dir"],
        data_fingerprint=describe["data_fingerprint"],
        data_clips=describe["data_clips"],
        resumes=list(resumes or []),
    )


def _best_summary(best: dict[str, Any]) -> dict[str, Any]:
    val_loss = best["val_loss"] if math.isfinite(best["val_loss"]) else None  # no eligible epoch yet
    return {"epoch": best["epoch"], "val_loss": val_loss, **{
        k: v for k, v in best["metrics"].items() if k.startswith("val_")}}


def on_devices(clips: list, devices: list[str] | None) -> list:
    """The clips recorded by one of `devices` (None: all clips)."""
    if devices is None:
        return clips
    wanted = set(devices)
    return [c for c in clips if c.device in wanted]


def _preload(config: TrainConfig, logmels: np.ndarray, rows: int) -> bool:
    if config.data.preload != "auto":
        return config.data.preload == "always"
    return LogMelRows.bytes_needed(logmels, rows) <= config.data.preload_limit_gb * 1e9


def _bar(iterable, enabled: bool, **kwargs):  # noqa: ANN001, ANN202 - tqdm or the plain iterable
    from tqdm import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def _banner(config: TrainConfig, describe: dict[str, Any], dist: Distributed, start_epoch: int) -> str:
    processes = f" x {dist.world_size} processes ({dist.backend or 'no process group'})" if dist.enabled else ""
    pcgrad = f" ({config.multitask.pcgrad}, {config.multitask.merge} merge)" if config.multitask.mode == "pcgrad" \
        else ""
    qat = f"on from epoch {config.qat_start_epoch}" if config.qat.enabled else "off"
    parts = [
        f"model {config.model}",
        f"{describe['train_clips']} training clips ({config.data.subset or config.data.train_split})",
        f"{describe['val_clips']} validation clips ({describe['validation']}: best.pt has the lowest loss there)",
        f"device {dist.device}{processes}",
        f"multitask {config.multitask.mode}{pcgrad}",
        f"QAT {qat}",
        f"{describe['correction_vectors']} spectrum-correction vectors",
    ]
    if config.data.devices is not None:
        parts.insert(3, f"devices {','.join(config.data.devices)}")
    if config.finetune.checkpoint:
        trainable = ",".join(config.finetune.trainable) if config.finetune.trainable else "all parameters"
        parts.append(f"starting from {config.finetune.checkpoint} (training {trainable})")
    if describe.get("device_irs"):
        mode = "replacing" if config.device_ir.replace_correction else "beside"
        parts.append(f"{describe['device_irs']} device IRs (p={config.device_ir.probability:g}, {mode} "
                     "spectrum correction)")
    if config.freq_mixstyle.enabled:
        parts.append(f"Freq-MixStyle p={config.freq_mixstyle.probability:g}")
    if describe.get("teacher"):
        d = config.distillation
        parts.append(f"distilling from {describe['teacher']} (kd_lambda={d.kd_lambda:g}, T={d.temperature:g})")
    if describe.get("long_clips"):
        seconds = describe["clip_frames"] / describe["window_frames"]
        parts.append(f"~{seconds:.0f}-s clips trained as {describe['long_clips']}"
                     + (f" ({config.data.windows_per_clip} random 1-s window(s) per clip and epoch)"
                        if describe["long_clips"] == "windows" else ""))
    lines = ["dsmn train: " + ", ".join(parts), *schedule_notes(config)]
    if start_epoch:
        lines.append(f"resuming at epoch {start_epoch + 1}/{config.epochs}")
    return "\n".join(lines)
