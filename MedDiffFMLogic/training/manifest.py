"""The training manifest: one row per CT volume.

CSV (header row) or JSON (a list of objects, or {"volumes": [...]}) with the fields
  image   path of the CT (NIfTI, NRRD, MHA or a DICOM folder), HU
  labels  optional: anatomy label map on the CT's grid (TotalSegmentator "total" indices, 118 = body)
  region  head_neck | chest | abdomen
  lesion  optional: lesion mask (non-zero = lesion), for the lesion ControlNet
  split   train | val | test (default train); "test" rows are never read by training
Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from ..regions import REGIONS

FIELDS = ("image", "labels", "region", "lesion", "split")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    image: str
    region: str
    labels: str | None = None
    lesion: str | None = None
    split: str = "train"


def _record(row: dict, where: str, root: Path) -> Record:
    if not isinstance(row, dict):
        raise InputError(f"{where}: each volume must be an object with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown manifest fields {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    clean = {k: (str(v).strip() if v is not None else "") for k, v in row.items()}
    if not clean.get("image"):
        raise InputError(f"{where}: the 'image' field is empty")
    region = clean.get("region", "")
    if region not in REGIONS:
        raise InputError(f"{where}: region {region!r} is not one of {', '.join(REGIONS)}")
    split = clean.get("split") or "train"
    if split not in SPLITS:
        raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")

    def path(key: str) -> str | None:
        value = clean.get(key)
        if not value:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (root / p))

    return Record(image=path("image"), region=region, labels=path("labels"), lesion=path("lesion"), split=split)


def read_manifest(path: str | os.PathLike) -> list[Record]:
    """All rows of a CSV or JSON manifest, with paths made absolute and every file checked to exist."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    root = path.resolve().parent
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"manifest {path} is not valid JSON: {exc}") from exc
        rows = data.get("volumes") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise InputError(f"manifest {path} must be a list of volumes or {{\"volumes\": [...]}}")
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "image" not in reader.fieldnames:
            raise InputError(f"manifest {path} needs a header row with at least image and region columns")
        rows = list(reader)
    records = [_record(row, f"{path}, volume {i + 1}", root) for i, row in enumerate(rows)]
    if not records:
        raise InputError(f"manifest {path} lists no volumes")
    for r in records:
        for p in (r.image, r.labels, r.lesion):
            if p is not None and not Path(p).exists():
                raise InputError(f"manifest {path}: {p} does not exist")
    return records


def write_manifest(records: list[Record], path: str | os.PathLike) -> Path:
    """Write a CSV manifest (paths relative to its folder where possible), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.resolve().parent

    def rel(p: str | None) -> str:
        if not p:
            return ""
        try:
            return str(Path(p).resolve().relative_to(root))
        except ValueError:
            return str(p)

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = asdict(r)
        writer.writerow({k: rel(row[k]) if k in ("image", "labels", "lesion") else row[k] for k in FIELDS})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(out.getvalue())
    os.replace(tmp, path)
    return path
