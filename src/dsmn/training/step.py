"""One optimisation step of the multi-task recipe: forward, losses, (PCGrad) backward, optimiser step.

Read `train_step` top to bottom; the rest of this module is what it calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dsmn.models import regularization_loss, split_logits, unwrap
from dsmn.models.regularization import has_regularization
from dsmn.training.distributed import Distributed
from dsmn.training.pcgrad import flatten, pcgrad, tensor_reach

if TYPE_CHECKING:
    from dsmn.training.config import TrainConfig


@dataclass
class StepSettings:
    """What a step needs besides the model and the batch (built once per run)."""

    multitask: str  # pcgrad | sum | off
    pcgrad: str  # full | shared-representation
    params: list[nn.Parameter]
    merge: str = "per-tensor"  # per-tensor (the authors' PCGrad) | per-element (see training.pcgrad)
    coarse_weight: float = 1.0
    regularization_weight: float = 0.0
    penalty_network: nn.Module | None = None  # the float network, when one of its modules defines a penalty
    head: nn.Module | None = None  # for shared-representation PCGrad: the head that reads the embedding
    dist: Distributed = field(default_factory=Distributed)
    kd_lambda: float = 0.02  # with a teacher: task loss = kd_lambda * label + (1 - kd_lambda) * T^2 * KL
    temperature: float = 2.0

    @classmethod
    def for_run(cls, config: TrainConfig, float_model: nn.Module, params: list[nn.Parameter],
                dist: Distributed | None = None, announce: bool = False) -> StepSettings:
        """The step a training run takes for `config` (the trainer and the speed benchmark both use it)."""
        return cls(
            multitask=config.multitask.mode, pcgrad=pcgrad_mode(config, float_model, announce), params=params,
            merge=config.multitask.merge,
            coarse_weight=config.multitask.coarse_weight, regularization_weight=config.regularization_weight,
            penalty_network=float_model if has_regularization(float_model) else None,
            head=getattr(float_model, "head", None), dist=dist or Distributed(),
            kd_lambda=config.distillation.kd_lambda, temperature=config.distillation.temperature,
        )


class StepResult(NamedTuple):
    """What one step measured, as detached 0-d tensors on the training device (no host sync)."""

    scene_loss: torch.Tensor  # label cross-entropy of the scene task
    coarse_loss: torch.Tensor  # label cross-entropy of the coarse task
    penalty: torch.Tensor  # the weighted regulariser (0 for networks without one)
    accuracy: torch.Tensor  # scene accuracy against the (mixed) targets' argmax
    scene_kd_loss: torch.Tensor  # T^2-scaled KL to the teacher, scene task (0 without a teacher)
    coarse_kd_loss: torch.Tensor  # the same, coarse task
    objective: torch.Tensor  # the loss actually optimised (label and distillation terms mixed) + penalty


class StepTotals:
    """Sums of StepResults over an epoch, kept on the device; read back with one host sync."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(len(StepResult._fields), device=device)
        self.steps = 0

    def add(self, result: StepResult) -> None:
        self.sums += torch.stack(result)
        self.steps += 1

    def mean_scene_loss(self) -> float:
        """The running mean scene loss (one host sync: for progress bars every few steps)."""
        return self.sums[0].item() / max(1, self.steps)

    def means(self, steps: int | None = None) -> dict[str, float]:
        """Mean of each StepResult field over `steps` (default: the steps added), one host sync."""
        values = (self.sums / max(1, self.steps if steps is None else steps)).tolist()
        return dict(zip(StepResult._fields, values, strict=True))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft (mixed) targets, averaged over the batch."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || softmax(logits / T)), summed over classes, averaged over the batch.

    `teacher` holds probabilities already softened at T (and mixed like the inputs). The T^2 factor
    keeps the gradient scale independent of T (Hinton et al. 2015).
    """
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = (torch.xlogy(teacher, teacher) - teacher * log_student).sum(dim=1).mean()
    return temperature**2 * kl


def task_losses(
    scene_logits: torch.Tensor, coarse_logits: torch.Tensor, scene_target: torch.Tensor, coarse_target: torch.Tensor,
    teacher: tuple[torch.Tensor, torch.Tensor] | None, s: StepSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scene task loss, coarse task loss, scene label CE, coarse label CE, [scene KD, coarse KD]).

    Without a teacher a task's loss is its label cross-entropy; with one, the distillation term is
    part of each task's loss, so PCGrad projects and merges the distilled task gradients.
    """
    scene_ce = soft_cross_entropy(scene_logits, scene_target)
    coarse_ce = soft_cross_entropy(coarse_logits, coarse_target)
    if teacher is None:
        return scene_ce, coarse_ce, scene_ce, coarse_ce, torch.zeros(2, device=scene_ce.device)
    scene_kd = distillation_loss(scene_logits, teacher[0], s.temperature)
    coarse_kd = distillation_loss(coarse_logits, teacher[1], s.temperature)
    lam = s.kd_lambda
    return (lam * scene_ce + (1 - lam) * scene_kd, lam * coarse_ce + (1 - lam) * coarse_kd, scene_ce, coarse_ce,
            torch.stack([scene_kd.detach(), coarse_kd.detach()]))


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    scene_target: torch.Tensor,
    coarse_target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    s: StepSettings,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> StepResult:
    """One step; returns its losses and accuracy as detached device tensors (KD losses 0 without a teacher)."""
    use_pcgrad = s.multitask == "pcgrad"
    shared_rep = use_pcgrad and s.pcgrad == "shared-representation"
    # PCGrad takes its gradients with autograd.grad and averages them across processes itself,
    # so DDP's own gradient synchronisation stays off for its forward (see training.distributed)
    sync = s.dist.no_sync(model) if use_pcgrad else contextlib.nullcontext()
    with sync, capture_representation(model, s.head) if shared_rep else contextlib.nullcontext() as captured:
        logits = model(x)
    scene_logits, coarse_logits = split_logits(logits)
    scene_loss, coarse_loss, scene_ce, coarse_ce, kd = task_losses(
        scene_logits, coarse_logits, scene_target, coarse_target, teacher, s)
    penalty = penalty_term(s)

    if not use_pcgrad:
        loss = scene_loss + (s.coarse_weight * coarse_loss if s.multitask == "sum" else 0.0)
        (loss + penalty if penalty is not None else loss).backward()
        objective = loss.detach()
    else:
        objective = scene_loss.detach() + coarse_loss.detach()
        if shared_rep:
            update = shared_representation_update(captured[0], (scene_loss, coarse_loss), s)
            s.dist.average_(update)
        else:  # faithful: two backward passes over every parameter, one graph (retain_graph for the first)
            per_task = [torch.autograd.grad(scene_loss, s.params, retain_graph=True, allow_unused=True),
                        torch.autograd.grad(coarse_loss, s.params, allow_unused=True)]
            task_grads = torch.stack([flatten(grads, s.params) for grads in per_task])
            s.dist.average_(task_grads)  # one all-reduce, before the projection: global-batch PCGrad
            reached = [tensor_reach(grads, s.params) for grads in per_task] if s.merge == "per-tensor" else None
            update = pcgrad(task_grads.unbind(), reached)
        if penalty is not None:  # the regulariser joins the merged (shared) update
            update += flatten(torch.autograd.grad(penalty, s.params, allow_unused=True), s.params)
        set_gradients(update, s.params)

    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = (scene_logits.argmax(1) == scene_target.argmax(1)).float().mean()
        penalty_value = penalty.detach() if penalty is not None else torch.zeros_like(accuracy)
        return StepResult(scene_ce.detach(), coarse_ce.detach(), penalty_value, accuracy, kd[0], kd[1],
                          objective + penalty_value)


def penalty_term(s: StepSettings) -> torch.Tensor | None:
    """weight * dsmn.models.regularization_loss(model) for networks that define one, else None."""
    if s.penalty_network is None or s.regularization_weight == 0:
        return None
    return s.regularization_weight * regularization_loss(s.penalty_network)


def pcgrad_mode(config: TrainConfig, model: nn.Module, announce: bool) -> str:
    """The configured PCGrad variant; `full` for networks without a `head` module (the
    shared-representation variant needs the embedding the head reads), with a notice."""
    mode = config.multitask.pcgrad
    if mode == "shared-representation" and getattr(model, "head", None) is None:
        if announce:
            print(f"note: {config.model} has no `head` module: PCGrad on every parameter instead of on the "
                  "shared representation", flush=True)
        return "full"
    return mode


def set_gradients(flat: torch.Tensor, params: list[nn.Parameter]) -> None:
    """Hand a flat update to the optimiser: each .grad becomes a view into `flat` (no copies)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view(p.shape)
        offset += n


# --- PCGrad on the shared representation (the faster variant) ----------------------------------


@contextlib.contextmanager
def capture_representation(model: nn.Module, head: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """Record the tensor the head's first layer reads (the shared embedding) during a forward."""
    if head is None:
        raise ValueError("multitask.pcgrad=shared-representation needs a network with a `head` module")
    consumer = representation_consumer(unwrap(model), head)
    captured: list[torch.Tensor] = []
    handle = consumer.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def representation_consumer(net: nn.Module, head: nn.Module) -> nn.Module:
    """The module that runs the head's first layer: the layer itself, or a QAT wrapper holding it."""
    first = next(m for m in head.modules() if any(True for _ in m.parameters(recurse=False)))
    for module in net.modules():
        for value in vars(module).values():
            if isinstance(value, tuple) and any(v is first for v in value):
                return module
    return first


def shared_representation_update(
    representation: torch.Tensor, losses: tuple[torch.Tensor, ...], s: StepSettings
) -> torch.Tensor:
    """PCGrad on [d loss / d embedding, head gradients] per task, then ONE backward through the trunk.

    The embedding is one tensor both tasks reach; head tensors follow `s.merge` like parameters do.
    The trunk receives the merged embedding gradient: a single backward pass instead of two.
    """
    head_ids = {id(p) for p in s.head.parameters()}
    head = [p for p in s.params if id(p) in head_ids]
    trunk = [p for p in s.params if id(p) not in head_ids]
    vectors, reached = [], []
    for loss in losses:
        grads = torch.autograd.grad(loss, [representation, *head], retain_graph=True, allow_unused=True)
        vectors.append(torch.cat([grads[0].reshape(-1), flatten(grads[1:], head)]))
        reached.append(tensor_reach(grads, [representation, *head]))
    merged = pcgrad(vectors, reached if s.merge == "per-tensor" else None)
    size = representation.numel()
    trunk_grads = torch.autograd.grad(representation, trunk, grad_outputs=merged[:size].view_as(representation),
                                      allow_unused=True)
    by_param = {id(p): g for p, g in zip(trunk, trunk_grads, strict=True)}
    offset = size
    for p in head:
        by_param[id(p)] = merged[offset:offset + p.numel()]
        offset += p.numel()
    return flatten([by_param[id(p)] for p in s.params], s.params)
