"""Training data: the paper's preprocessing, a cache of preprocessed volumes, and the three
multi-level sampling operations.

Preprocessing (once per volume, cached as .npy files that later runs memory-map): resample the CT
linearly to the working spacing, map the region's HU window onto [-1, 1]; resample the label map and
the lesion mask with nearest neighbour onto the same grid; for super-resolution, build the control
volume from the CT in HU with the tasks' convention (controls.superres_control).

Sampling: every sample is a window^3 cube drawn from one volume by one of three operations, chosen
with the configured weights (equal in the paper):
  whole  - the whole volume resized to window^3;
  double - a crop of (2 window)^3 (clipped to the volume) resized to window^3;
  native - a window^3 crop at the working spacing.
A sample is described per axis by fractional voxel positions P in the whole volume; the image and
control are read at P with linear interpolation, labels and masks with nearest neighbour, and the
position coordinates are the whole volume's coordinates read at P (so a native crop's coordinates are
exactly the matching sub-grid of the whole-volume coordinates, and all levels share one frame). An
axis shorter than a native window is padded by replication and its coordinates continue linearly,
which is what the sliding-window sampler does at inference.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..controls import lesion_control, lowres_volume, superres_control
from ..errors import InputError
from ..network import ABSENT_ANATOMY, coordinate_grid, whole_volume_axes
from ..regions import region_index
from ..units import window_to_unit
from .config import LEVELS, DataConfig
from .manifest import Record
from .objective import Batch

CACHE_VERSION = 1  # bump when preprocessing changes, so stale cache entries are not reused


# ----------------------------------------------------------------------------------------- preprocessing


def superres_training_control(image_hu: sitk.Image, factor: int, region: str) -> np.ndarray:
    """The super-resolution control for a working-grid CT: slab average of `factor` slices along z,
    interpolated back onto the working grid with the tasks' convention; (D, H, W) float32 in [-1, 1]."""
    return superres_control(lowres_volume(image_hu, factor), image_hu, region)[0].numpy()


@dataclass(frozen=True)
class Volume:
    """One preprocessed volume: arrays (z, y, x) on the working grid (memory-mapped from the cache)."""

    record: Record
    image: np.ndarray  # float32 in [-1, 1]
    labels: np.ndarray | None  # uint8 anatomy labels
    lesion: np.ndarray | None  # uint8 0/1
    control: np.ndarray | None  # float32 super-resolution control
    lesion_voxels: np.ndarray | None = None  # (K, 3) indices of the lesion voxels, for lesion-centred crops

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)


def _cache_key(record: Record, data: DataConfig, task: str | None) -> str:
    stat = []
    for p in (record.image, record.labels, record.lesion):
        if p is None:
            stat.append(None)
        else:
            s = Path(p).stat()
            stat.append([str(Path(p).resolve()), s.st_size, s.st_mtime_ns])
    key = {"v": CACHE_VERSION, "files": stat, "region": record.region, "spacing": list(data.spacing),
           "superres": data.lowres_factor if task == "superres" else None}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)  # atomic: processes of a distributed run may race on the same entry


def preprocess(record: Record, data: DataConfig, task: str | None, cache_dir: Path) -> Volume:
    """The volume on the working grid, from the cache or computed and cached."""
    key = _cache_key(record, data, task)
    folder = cache_dir / "preprocessed"
    folder.mkdir(parents=True, exist_ok=True)
    names = {"image": folder / f"{key}-image.npy"}
    if record.labels:
        names["labels"] = folder / f"{key}-labels.npy"
    if record.lesion:
        names["lesion"] = folder / f"{key}-lesion.npy"
    if task == "superres":
        names["control"] = folder / f"{key}-control.npy"
    if not all(p.exists() for p in names.values()):
        ct = ctio.read_ct(record.image)
        grid = ctio.resample_to_spacing(ct, data.spacing, "linear")
        arrays = {"image": window_to_unit(grid, record.region)}
        if record.labels:
            labels = ctio.resample_onto(ctio.read_label_map(record.labels), grid, "nearest", 0)
            lab = sitk.GetArrayFromImage(labels)
            if lab.min() < 0 or lab.max() > 255:
                raise InputError(f"{record.labels}: anatomy labels must lie in 0..255 (TotalSegmentator indices)")
            arrays["labels"] = lab.astype(np.uint8)
        if record.lesion:
            lesion = ctio.resample_onto(ctio.read_label_map(record.lesion), grid, "nearest", 0)
            arrays["lesion"] = (sitk.GetArrayFromImage(lesion) > 0).astype(np.uint8)
        if task == "superres":
            arrays["control"] = superres_training_control(grid, data.lowres_factor, record.region)
        for k, path in names.items():
            _save_npy(path, arrays[k])
    loaded = {k: np.load(p, mmap_mode="r") for k, p in names.items()}
    voxels = np.argwhere(np.asarray(loaded["lesion"])) if "lesion" in loaded else None
    return Volume(record, loaded["image"], loaded.get("labels"), loaded.get("lesion"), loaded.get("control"), voxels)


# ----------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sample:
    """One training sample: image (1, w, w, w); anatomy (w, w, w) labels (ABSENT_ANATOMY where the
    volume has none); coords (3, w, w, w) in the whole-volume frame; region class index; control
    (C, w, w, w) or None; the level it came from and its per-axis positions (for tests and plots)."""

    image: torch.Tensor
    anatomy: torch.Tensor
    coords: torch.Tensor
    region: int
    control: torch.Tensor | None
    level: str
    positions: tuple[np.ndarray, np.ndarray, np.ndarray]


def level_positions(shape: Sequence[int], window: int, level: str, rng: np.random.Generator,
                    centre: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
    """Per-axis fractional voxel positions (z, y, x) of a sample; `centre` puts crops around a voxel."""
    out = []
    for k, n in enumerate(shape):
        if level == "whole":
            out.append(np.linspace(0.0, n - 1.0, window))
            continue
        extent = min(2 * window, n) if level == "double" else window
        span = n - extent  # room for the crop's start (negative: a native window longer than the axis)
        if span <= 0:
            start = 0
        elif centre is not None:
            start = int(np.clip(int(centre[k]) - extent // 2, 0, span))
        else:
            start = int(rng.integers(0, span + 1))
        if level == "double":
            out.append(np.linspace(float(start), float(start + extent - 1), window))
        else:
            out.append(np.arange(start, start + window, dtype=np.float64))
    return tuple(out)


def _weights(n: int, pos: np.ndarray):
    p = np.clip(pos, 0.0, n - 1.0)  # replicate past the border
    i0 = np.floor(p).astype(np.int64)
    return i0, np.minimum(i0 + 1, n - 1), (p - i0).astype(np.float32)


def _linear_along(array: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    i0, i1, w = _weights(array.shape[axis], pos)
    # np.take reads only the needed slices of a memory-mapped volume
    a0 = np.take(array, i0, axis=axis).astype(np.float32, copy=False)
    if not w.any():
        return a0  # integer positions: an exact copy
    a1 = np.take(array, i1, axis=axis).astype(np.float32, copy=False)
    shape = [1] * array.ndim
    shape[axis] = len(pos)
    w = w.reshape(shape)
    return a0 * (1 - w) + a1 * w


def read_linear(array: np.ndarray, positions: Sequence[np.ndarray]) -> torch.Tensor:
    """Separable linear interpolation of a (D, H, W) array at per-axis positions (border replicated)."""
    out = array
    for axis, pos in enumerate(positions):
        out = _linear_along(out, axis, pos)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def read_nearest(array: np.ndarray, positions: Sequence[np.ndarray]) -> torch.Tensor:
    index = np.ix_(*[np.clip(np.rint(p), 0, n - 1).astype(np.int64) for p, n in zip(positions, array.shape)])
    return torch.from_numpy(np.ascontiguousarray(array[index]))


def coordinates_at(shape: Sequence[int], positions: Sequence[np.ndarray]) -> torch.Tensor:
    """The whole-volume coordinates read at per-axis positions, continued linearly past the volume: (3, w, w, w)."""
    axes = []
    for axis, pos in zip(whole_volume_axes(shape), positions):
        n = len(axis)
        if n == 1:
            axes.append(torch.zeros(len(pos)))
            continue
        inside = (pos >= 0) & (pos <= n - 1) & (pos == np.floor(pos))
        if inside.all():
            axes.append(axis[torch.from_numpy(pos.astype(np.int64))])  # exactly the whole volume's values
        else:
            i0, i1, w = _weights(n, pos)
            w = torch.from_numpy(w)
            values = axis[torch.from_numpy(i0)] * (1 - w) + axis[torch.from_numpy(i1)] * w
            # past the border the coordinates continue linearly, as in the sliding-window sampler
            beyond = torch.from_numpy(pos > n - 1)
            values = torch.where(beyond, 1.0 + (2.0 / (n - 1)) * (torch.from_numpy(pos).float() - (n - 1)), values)
            axes.append(values)
    return coordinate_grid(axes)[0]


def make_sample(volume: Volume, window: int, level: str, rng: np.random.Generator, task: str | None = None,
                lesion_crop_probability: float = 0.0) -> Sample:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    centre = None
    if task == "lesion" and level != "whole" and volume.lesion is not None and rng.random() < lesion_crop_probability:
        where = volume.lesion_voxels
        if len(where):
            centre = where[int(rng.integers(len(where)))]
    positions = level_positions(volume.shape, window, level, rng, centre)
    image = read_linear(volume.image, positions)[None]
    if volume.labels is not None:
        anatomy = read_nearest(volume.labels, positions).long()
    else:
        anatomy = torch.full((window,) * 3, ABSENT_ANATOMY, dtype=torch.long)
    control = None
    if task == "superres":
        control = read_linear(volume.control, positions)[None]
    elif task == "lesion":
        mask = read_nearest(volume.lesion, positions) if volume.lesion is not None else torch.zeros((window,) * 3)
        control = lesion_control(mask)
    return Sample(image, anatomy, coordinates_at(volume.shape, positions), region_index(volume.record.region),
                  control, level, positions)


def collate(samples: Sequence[Sample]) -> Batch:
    control = None if samples[0].control is None else torch.stack([s.control for s in samples])
    return Batch(
        image=torch.stack([s.image for s in samples]),
        region=torch.tensor([s.region for s in samples], dtype=torch.long),
        anatomy=torch.stack([s.anatomy for s in samples]),
        coords=torch.stack([s.coords for s in samples]),
        control=control,
    )


class TrainingData:
    """The preprocessed train and validation volumes and the deterministic sample stream.

    Sample g of the global stream (g counts samples over steps, micro-batches, batch entries and ranks)
    is fully determined by (seed, g): its volume comes from a per-epoch permutation of the training
    volumes (epoch = g // N), as DistributedSampler would give it (rank r of R takes every R-th entry),
    and its level, crop and noise come from generators seeded with (seed, g). Resuming at any step or
    changing the number of processes (with batch x processes fixed) therefore reproduces the same samples.
    """

    def __init__(self, records: Sequence[Record], data: DataConfig, window: int, task: str | None,
                 cache_dir: Path, seed: int, preprocess_volumes: bool = True):
        self.data, self.window, self.task, self.seed = data, window, task, seed
        self.train_records = [r for r in records if r.split == "train"]
        self.val_records = [r for r in records if r.split == "val"]
        if not self.train_records:
            raise InputError("the manifest has no volumes with split 'train'")
        if task == "lesion" and not any(r.lesion for r in self.train_records):
            raise InputError("lesion fine-tuning needs training volumes with a 'lesion' mask in the manifest")
        self.cache_dir = cache_dir
        weights = np.asarray(data.level_weights, dtype=np.float64)
        self.level_p = weights / weights.sum()
        self._train: list[Volume | None] = [None] * len(self.train_records)
        self._val: list[Volume | None] = [None] * len(self.val_records)
        if preprocess_volumes:
            self.preprocess_all()

    def __getstate__(self):
        # DataLoader workers started with "spawn" receive a pickled copy: send the paths, not the
        # memory-mapped arrays (pickling those would copy every volume); workers map the cache again.
        state = dict(self.__dict__)
        state["_train"] = [None] * len(self._train)
        state["_val"] = [None] * len(self._val)
        return state

    def preprocess_all(self, progress=None) -> None:
        jobs = [(self._train, i, r) for i, r in enumerate(self.train_records)]
        jobs += [(self._val, i, r) for i, r in enumerate(self.val_records)]
        if progress is not None:
            progress.start("preprocessing", len(jobs))
        for k, (store, i, r) in enumerate(jobs):
            store[i] = preprocess(r, self.data, self.task, self.cache_dir)
            if progress is not None:
                progress.step(k + 1, Path(r.image).name)

    def train_volume(self, i: int) -> Volume:
        if self._train[i] is None:
            self._train[i] = preprocess(self.train_records[i], self.data, self.task, self.cache_dir)
        return self._train[i]

    def val_volume(self, i: int) -> Volume:
        if self._val[i] is None:
            self._val[i] = preprocess(self.val_records[i], self.data, self.task, self.cache_dir)
        return self._val[i]

    def volume_index(self, g: int) -> int:
        n = len(self.train_records)
        epoch, position = divmod(g, n)
        return int(np.random.default_rng([self.seed, epoch, 7]).permutation(n)[position])

    def sample(self, g: int) -> tuple[Sample, int]:
        """Training sample g and a seed for its noise, timestep and condition dropout."""
        rng = np.random.default_rng([self.seed, g, 1])
        level = LEVELS[int(rng.choice(3, p=self.level_p))]
        sample = make_sample(self.train_volume(self.volume_index(g)), self.window, level, rng, self.task,
                             self.data.lesion_crop_probability)
        return sample, int(rng.integers(0, 2**62))

    def validation_samples(self, per_volume: int) -> list[tuple[Sample, int]]:
        """A fixed validation set: per volume, the levels in turn, with fixed crops and noise seeds."""
        out = []
        for v in range(len(self.val_records)):
            for j in range(per_volume):
                rng = np.random.default_rng([self.seed, v, j, 2])
                sample = make_sample(self.val_volume(v), self.window, LEVELS[j % 3], rng, self.task,
                                     self.data.lesion_crop_probability)
                out.append((sample, int(rng.integers(0, 2**62))))
        return out
