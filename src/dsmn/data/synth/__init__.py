"""Synthetic TAU-format data (docs/data.md): scenes built from sound sources, recorded by devices."""

from dsmn.data.synth.plan import SIZES, Plan, make_plan
from dsmn.data.synth.writer import SynthSummary, generate

__all__ = ["SIZES", "Plan", "SynthSummary", "generate", "make_plan"]
