"""Export every model of a device bundle to ONNX, each checked on its own device's clips.

The exported folder is a bundle too (same manifest format, ONNX files instead of checkpoints), so
`dsmn evaluate`, `dsmn predict` and `dsmn.submission` use it as they use the checkpoint bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsmn.data import spread
from dsmn.deploy.bundle import COMPLEXITY, GENERAL, Bundle, BundleError, model_complexity, submission_complexity
from dsmn.deploy.bundle import write_json_atomic as _write_json
from dsmn.deploy.data import logmel_batches, open_features, split_clips
from dsmn.deploy.onnx_export import export_onnx
from dsmn.deploy.trained import load_trained


def export_bundle(
    bundle: Bundle, out: str | Path, *, precision: str = "int8", data: str | Path | None = None,
    split: str = "evaluate", check_clips: int = 2000, cache_dir: str | Path | None = None, compact: bool = False,
    check: bool = True, log: Callable[[str], None] = print,
) -> tuple[Bundle, dict[str, Any]]:
    """Write `out`/<model>.onnx per model, `out`/manifest.json and complexity.json; returns the exported
    bundle and each model's export report. Raises ExportCheckError when a model fails its check."""
    out = Path(out)
    if out.resolve() == bundle.root.resolve():
        raise BundleError(f"{out}: the export folder must differ from the bundle it exports")
    bundle.check_files()
    data = data if data is not None else bundle.info.get("data")
    if check and (data is None or not Path(data).is_dir()):
        raise BundleError("no data to check the exports on: pass --data DIR (or --no-check)")
    figures = model_complexity(bundle)
    dataset = clips = None
    if check:
        dataset, clips = split_clips(data, split)
    out.mkdir(parents=True, exist_ok=True)
    exported = Bundle(out, {}, dict(bundle.devices), {**bundle.info, "precision": precision,
                                                       "exported_from": str(bundle.root.resolve())})
    reports: dict[str, Any] = {}
    for name in bundle.models:
        trained = load_trained(bundle.path(name))
        check_inputs = calibration = None
        if check:
            cache = open_features(dataset, trained.frontend, cache_dir, progress=False)
            own = [c for c in cache.usable(clips) if name == GENERAL or c.device == name] or cache.usable(clips)
            check_inputs = [trained.network_input(b) for b in logmel_batches(cache, spread(own, check_clips), 256)]
            if not trained.is_qat and precision == "int8":
                _, train_clips = split_clips(dataset, bundle.info.get("train_split", "train"))
                train_clips = [c for c in cache.usable(train_clips) if name == GENERAL or c.device == name]
                calibration = [trained.network_input(b) for b in logmel_batches(cache, spread(train_clips, 2000))]
        report = export_onnx(trained, out / f"{name}.onnx", precision, check_inputs=check_inputs,
                             calibration=calibration, compact=compact)
        log(f"dsmn export: {name}: {report.clips_checked} clips checked, agreement "
            f"{'-' if report.agreement is None else f'{report.agreement:.2%}'} -> {out / f'{name}.onnx'}")
        exported.models[name] = f"{name}.onnx"
        reports[name] = report.to_dict()
    exported.info["complexity"] = figures
    exported.info["export"] = {name: {k: r[k] for k in ("clips_checked", "agreement", "max_logit_diff",
                                                        "int8_operators", "stored_param_bytes")}
                               for name, r in reports.items()}
    exported.save()
    _write_json(out / COMPLEXITY, submission_complexity(exported, figures))
    return exported, reports


__all__ = ["export_bundle"]
