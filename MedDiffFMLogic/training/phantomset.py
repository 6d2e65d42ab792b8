"""A training set of procedural phantoms written to disk with a manifest, so that training on phantoms
takes exactly the path real CT takes (files -> manifest -> preprocessing -> cache -> samples)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
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


def _write_phantom(config: PhantomSetConfig, region: str, seed: int, paths: dict[str, Path]) -> None:
    phantom = make_phantom(PhantomConfig(
        region=region, size=_size(config, region, seed), spacing=config.spacing,
        lesions=_lesions(config, seed), seed=seed, contrast=config.contrast,
        patient_scale=config.patient_scale,
    ))
    # labels and lesion first, the CT last: a CT on disk means its set is complete
    ctio.write_image(phantom.labels, paths["labels"])
    ctio.write_image(phantom.lesion_mask, paths["lesion"])
    ctio.write_image(phantom.image, paths["ct"])


def make_phantom_set(config: PhantomSetConfig, folder: str | Path, progress: Progress = SILENT,
                     processes: int | None = None) -> Path:
    """Write every phantom of the set (CT, labels, lesion mask) under `folder` and a manifest.csv; files
    already there are kept, so a second call (or a resumed run) costs nothing. Missing phantoms are made
    by `processes` processes at once (default one per core; each phantom depends only on its seed).
    Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(region, seed, split) for split, (a, b) in (("train", config.seeds), ("val", config.val_seeds))
            for region in config.regions for seed in range(a, b)]
    if any(seed >= HELD_OUT_SEED_START for _, seed, _ in jobs):  # the config refuses this too; never train on them
        raise ValueError("held-out benchmark seeds in a training phantom set")
    records, missing = [], []
    for region, seed, split in jobs:
        stem = folder / f"{region}-{seed:05d}"
        paths = {k: stem.with_name(f"{stem.name}-{k}.nii.gz") for k in ("ct", "labels", "lesion")}
        if not all(p.exists() for p in paths.values()):
            missing.append((region, seed, paths))
        records.append(Record(image=str(paths["ct"]), region=region, labels=str(paths["labels"]),
                              lesion=str(paths["lesion"]), split=split))
    progress.start("phantoms", len(jobs), f"{len(jobs)} phantoms in {folder}, {len(missing)} to make")
    done = len(jobs) - len(missing)
    progress.step(done)
    # starting a process costs seconds (imports): worth it for a set, not for a handful
    workers = min(processes or os.cpu_count() or 1, len(missing) // 4)
    if workers <= 1:
        for region, seed, paths in missing:
            _write_phantom(config, region, seed, paths)
            done += 1
            progress.step(done, f"{region} seed {seed}")
    else:
        # spawn, not fork: a forked child of a process whose ITK or OpenMP threads have run can hang
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_write_phantom, config, region, seed, paths): (region, seed)
                       for region, seed, paths in missing}
            for future in concurrent.futures.as_completed(futures):
                future.result()
                done += 1
                progress.step(done, "{} seed {}".format(*futures[future]))
    return write_manifest(records, folder / "manifest.csv")
