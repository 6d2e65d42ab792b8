"""A training set of procedural phantoms written to disk with a manifest, so that training on phantoms
takes exactly the path real CT takes (files -> manifest -> preprocessing -> cache -> samples)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import ctio
from ..phantoms import PhantomConfig, make_phantom
from ..progress import SILENT, Progress
from .config import HELD_OUT_SEED_START, PhantomSetConfig
from .manifest import Record, write_manifest


def _size(config: PhantomSetConfig, region: str, seed: int) -> tuple[int, int, int]:
    """The seed's field of view: the nominal size jittered per axis (reproducible per region and seed)."""
    rng = np.random.default_rng([seed, 1 + config.regions.index(region), 77])
    return tuple(int(n + rng.integers(-j, j + 1)) for n, j in zip(config.size, config.size_jitter))


def _lesions(config: PhantomSetConfig, seed: int) -> int:
    lo, hi = config.lesions
    return int(np.random.default_rng([seed, 99]).integers(lo, hi + 1))


def phantom_set_id(config: PhantomSetConfig) -> str:
    text = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def make_phantom_set(config: PhantomSetConfig, folder: str | Path, progress: Progress = SILENT) -> Path:
    """Write every phantom of the set (CT, labels, lesion mask) under `folder` and a manifest.csv; files
    already there are kept, so a second call (or a resumed run) costs nothing. Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(region, seed, split) for split, (a, b) in (("train", config.seeds), ("val", config.val_seeds))
            for region in config.regions for seed in range(a, b)]
    if any(seed >= HELD_OUT_SEED_START for _, seed, _ in jobs):  # the config refuses this too; never train on them
        raise ValueError("held-out benchmark seeds in a training phantom set")
    records = []
    progress.start("phantoms", len(jobs), f"{len(jobs)} phantoms in {folder}")
    for i, (region, seed, split) in enumerate(jobs):
        stem = folder / f"{region}-{seed:05d}"
        paths = {k: stem.with_name(f"{stem.name}-{k}.nii.gz") for k in ("ct", "labels", "lesion")}
        if not all(p.exists() for p in paths.values()):
            phantom = make_phantom(PhantomConfig(
                region=region, size=_size(config, region, seed), spacing=config.spacing,
                lesions=_lesions(config, seed), seed=seed,
            ))
            # labels and lesion first, the CT last: a CT on disk means its set is complete
            ctio.write_image(phantom.labels, paths["labels"])
            ctio.write_image(phantom.lesion_mask, paths["lesion"])
            ctio.write_image(phantom.image, paths["ct"])
        records.append(Record(image=str(paths["ct"]), region=region, labels=str(paths["labels"]),
                              lesion=str(paths["lesion"]), split=split))
        progress.step(i + 1, f"{region} seed {seed}")
    return write_manifest(records, folder / "manifest.csv")
