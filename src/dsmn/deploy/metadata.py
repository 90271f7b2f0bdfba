"""What an exported ONNX file records about its input and output (ONNX metadata_props).

A deployment reads these to rebuild the input from audio exactly as in training: the front-end
settings (one key per setting, plus all of them as JSON), deltas, standardisation, and the class order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import onnx

from dsmn.features import FrontEndConfig
from dsmn.labels import COARSE, SCENES

PREFIX = "dsmn."
STANDARDIZE = "per clip and channel over (mel, frames): zero mean, unit std (std floored at 1e-5)"


@dataclass(frozen=True)
class InputRecipe:
    """How to turn audio into the network input, and how to read its output."""

    frontend: FrontEndConfig
    deltas: bool
    delta_width: int = 5
    classes: tuple[str, ...] = SCENES
    model_name: str = ""
    precision: str = ""
    checkpoint: str = ""  # JSON: which checkpoint of its run was exported (dsmn.deploy.trained.checkpoint_label)
    long_clips: str = "windows"  # clips longer than 1 s: mean of 1-s window probabilities, or `whole` in one pass

    @property
    def window_frames(self) -> int:
        """Frames of the network's 1-s input at this front end (44 for DSMN)."""
        return self.frontend.n_frames(self.frontend.sample_rate)


def metadata_for(recipe: InputRecipe) -> dict[str, str]:
    frontend = {f.name: getattr(recipe.frontend, f.name) for f in fields(FrontEndConfig)}
    props = {
        f"{PREFIX}model_name": recipe.model_name,
        f"{PREFIX}precision": recipe.precision,
        f"{PREFIX}classes": json.dumps(list(recipe.classes)),
        f"{PREFIX}coarse_classes": json.dumps(list(COARSE)),
        f"{PREFIX}output": (
            f"logits (batch, {len(recipe.classes) + len(COARSE)}): the {len(recipe.classes)} scene logits in "
            f"{PREFIX}classes order, then the {len(COARSE)} coarse logits ({PREFIX}coarse_classes); softmax over the "
            "scene logits gives the scene probabilities"
        ),
        f"{PREFIX}input": (
            "features (batch, channels, n_mels, frames) float32; channels = [log10 mel power, its deltas] "
            "(or the log-mel alone when deltas is false), each standardised"
        ),
        f"{PREFIX}frontend": json.dumps(frontend),
        f"{PREFIX}deltas": json.dumps(recipe.deltas),
        f"{PREFIX}delta_width": str(recipe.delta_width),
        f"{PREFIX}standardize": STANDARDIZE,
        f"{PREFIX}frames_per_second_window": str(recipe.window_frames),
        f"{PREFIX}long_clips": recipe.long_clips,
        f"{PREFIX}long_clips_rule": (
            "clips longer than 1 s: windows = cut into 1-s windows (every frames_per_second_window frames, plus "
            "one flush with the end), standardise each, average the windows' scene probabilities; whole = one "
            "pass over the whole clip"
        ),
    }
    for name, value in frontend.items():
        props[f"{PREFIX}frontend.{name}"] = json.dumps(value)
    if recipe.checkpoint:
        props[f"{PREFIX}checkpoint"] = recipe.checkpoint
    return props


def write_metadata(model: onnx.ModelProto, recipe: InputRecipe) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata_for(recipe).items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def read_recipe(props: dict[str, Any]) -> InputRecipe:
    """The recipe from an ONNX file's metadata (e.g. `InferenceSession.get_modelmeta().custom_metadata_map`)."""
    try:
        frontend = json.loads(props[f"{PREFIX}frontend"])
    except KeyError:
        raise ValueError("this ONNX file has no dsmn front-end metadata; export it with `dsmn export`") from None
    known = {f.name for f in fields(FrontEndConfig)}
    return InputRecipe(
        frontend=FrontEndConfig(**{k: v for k, v in frontend.items() if k in known}),
        deltas=bool(json.loads(props.get(f"{PREFIX}deltas", "true"))),
        delta_width=int(props.get(f"{PREFIX}delta_width", 5)),
        classes=tuple(json.loads(props.get(f"{PREFIX}classes", json.dumps(list(SCENES))))),
        model_name=props.get(f"{PREFIX}model_name", ""),
        precision=props.get(f"{PREFIX}precision", ""),
        checkpoint=props.get(f"{PREFIX}checkpoint", ""),
        long_clips=props.get(f"{PREFIX}long_clips", "windows"),
    )
