"""Name -> builder registry: every network in the toolkit is built by `create(name)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from dsmn.errors import UserError


class UnknownModelError(UserError, ValueError):
    """A model name that is not registered."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered network and the input it expects.

    `frontend` overrides the default log-mel settings (dsmn.features.FrontEndConfig fields) and
    `deltas` says whether the delta channel is stacked on the log-mel, so the data pipeline can build
    the right input for every family (the DCASE baseline CNN uses 40 bands from 40 ms frames).
    `input_shape` is the resulting input of one 1-s clip, (channels, mel, frames): what complexity
    is measured on.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    family: str
    frontend: dict = field(default_factory=dict)
    deltas: bool = True
    input_shape: tuple[int, int, int] = (2, 256, 44)


def frontend_input_shape(
    frontend: dict | None = None, deltas: bool = True, seconds: float = 1.0
) -> tuple[int, int, int]:
    """(channels, mel, frames) of the model input for a clip of `seconds` under these front-end overrides."""
    from dsmn.features.frontend import FrontEndConfig

    config = FrontEndConfig(**(frontend or {}))
    return (2 if deltas else 1, config.n_mels, config.n_frames(round(config.sample_rate * seconds)))


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *args: object, family: str, description: str, frontend: dict | None = None, deltas: bool = True
) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator: register a builder function under its own name (`def model1(**overrides)` registers
    "model1"), so every model name is written once, where the network is defined, and a search for
    `def model1` finds it. A second registration of a name is an error."""
    if args:  # one registration style: no name argument, so every name is written once
        raise TypeError(f"register_model takes no model name ({args[0]!r}): the decorated function's name is "
                        "the model name, e.g. `@register_model(family=...)` on `def model1(**overrides)`")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        shape = frontend_input_shape(frontend, deltas)
        _REGISTRY[name] = ModelEntry(name, builder, description, family, dict(frontend or {}), deltas, shape)
        return builder

    return wrap


def create(name: str, **overrides) -> nn.Module:
    """Build the registered network `name`; keyword overrides go to its builder (e.g. dropout)."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    model = entry.builder(**overrides)
    model.model_name = name
    model.model_kwargs = dict(overrides)
    return model


def available(family: str | None = None) -> list[str]:
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]
