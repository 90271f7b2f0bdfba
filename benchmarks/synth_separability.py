"""How separable are the synthetic scenes by their average spectrum alone?

Trains a logistic regression (standardised features) on each clip's time-averaged log-mel (the DSMN
front end, docs/architecture.md) on fold1_train and reports fold1_evaluate accuracy, overall, on device a and on
the unseen devices s4..s6. Design targets for the `demo` set: overall <= 50 %, and s4..s6 at least 8
points below device a. A model must therefore use temporal structure (events, rhythms, glides).

    pip install -e ".[bench]"   # scikit-learn
    python benchmarks/synth_separability.py DATA [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dsmn.data import load_dataset
from dsmn.features import ensure_cache
from dsmn.labels import UNSEEN_DEVICES


def mean_logmel(cache, clips) -> np.ndarray:
    return cache.logmels[cache.rows(clips)].astype(np.float32).mean(axis=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data)
    cache = ensure_cache(dataset, args.cache, progress=False)
    train, evaluate = cache.usable(dataset.split("train")), cache.usable(dataset.split("evaluate"))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    model.fit(mean_logmel(cache, train), [c.scene_id for c in train])
    predicted = model.predict(mean_logmel(cache, evaluate))
    truth = np.array([c.scene_id for c in evaluate])
    devices = np.array([c.device for c in evaluate])
    correct = predicted == truth

    def accuracy(mask: np.ndarray) -> float:
        return 100.0 * float(correct[mask].mean()) if mask.any() else float("nan")

    overall, on_a = accuracy(np.ones_like(correct)), accuracy(devices == "a")
    unseen = accuracy(np.isin(devices, UNSEEN_DEVICES))
    print(f"train clips {len(train)}, evaluate clips {len(evaluate)}")
    print(f"logistic regression on time-averaged log-mel: evaluate accuracy {overall:.1f} %")
    print(f"  device a {on_a:.1f} %   unseen s4-s6 {unseen:.1f} %   gap {on_a - unseen:.1f} points")
    for device in sorted(set(devices)):
        print(f"  {device:>3}: {accuracy(devices == device):5.1f} %  ({int((devices == device).sum())} clips)")
    ok = overall <= 50.0 and on_a - unseen >= 8.0
    print("targets (<= 50 %, gap >= 8 points):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
