"""Prediction with a device bundle: each file is classified by the model of its recording device.

A file's device id comes from a table (CSV `filename,device_id`; the file is matched by the name
`dsmn predict` reports, its path, or its base name), else from its TAU file name (`...-s2.wav`),
else it is `unknown`. Unknown and unlisted ids go to the bundle's general model.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath

from dsmn.data import parse_tau_name
from dsmn.deploy.bundle import UNKNOWN, Bundle, BundleError
from dsmn.deploy.inference import load_for_inference
from dsmn.deploy.predict import FileFailure, FilePrediction, Predictor

DEVICE_COLUMNS = ("device_id", "device", "source_label")


def read_device_ids(path: str | Path) -> dict[str, str]:
    """filename -> device id from a CSV (comma or tab separated) with a `filename` and a `device_id`
    (or `device` / `source_label`) column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise BundleError(f"{path}: cannot read the device-id table ({error.strerror or error})") from None
    lines = text.splitlines()
    if not lines:
        raise BundleError(f"{path}: empty device-id table; expected a header filename,device_id")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    device_column = next((c for c in DEVICE_COLUMNS if c in header), None)
    if "filename" not in header or device_column is None:
        raise BundleError(f"{path}, line 1: expected columns filename and device_id, got {', '.join(header)}")
    f, d = header.index("filename"), header.index(device_column)
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(f, d):
            raise BundleError(f"{path}, line {line}: {len(row)} field(s), expected {len(header)}")
        table[row[f].strip()] = row[d].strip() or UNKNOWN
    return table


def device_id_of(path: Path, name: str, table: dict[str, str] | None) -> str:
    """The device id of one file: table (by reported name, path or base name), TAU name, else unknown."""
    if table:
        for key in (name, str(path), path.as_posix(), PurePath(name).name):
            if key in table:
                return table[key]
    parsed = parse_tau_name(path.name)
    return parsed.device if parsed is not None else UNKNOWN


class BundlePredictor:
    """Classifies files with the bundle's models, one model per device id; results in input order."""

    def __init__(self, bundle: Bundle, kind: str | None = None, batch_size: int = 32) -> None:
        bundle.check_files()  # a manifest naming a missing file fails before any work
        self.bundle = bundle
        self.kind = kind
        self.batch_size = batch_size

    def predict(self, files: Sequence[tuple[Path, str]], device_ids: Sequence[str]
                ) -> Iterator[tuple[FilePrediction | FileFailure, str, str]]:
        """(result, device id, model name) per file, in the order of `files`."""
        assigned = [self.bundle.model_name_for(d) for d in device_ids]
        results: dict[int, FilePrediction | FileFailure] = {}
        for name in dict.fromkeys(assigned):
            index = [i for i, a in enumerate(assigned) if a == name]
            predictor = Predictor(load_for_inference(self.bundle.path(name), self.kind), batch_size=self.batch_size)
            for i, result in zip(index, predictor.predict([files[i] for i in index]), strict=True):
                results[i] = result
        for i in range(len(files)):
            yield results[i], device_ids[i], assigned[i]
