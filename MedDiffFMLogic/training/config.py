"""Training configurations: frozen dataclasses read from JSON (or YAML, when PyYAML is installed).

A config file maps onto TrainConfig field by field; nested sections map onto DataConfig and
PhantomSetConfig, and `network` is a preset name ("paper", "small", "cpu", "tiny"), a full NetworkConfig
dictionary, or {"preset": name, ...fields to override}. Unknown keys are errors, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..controlnet import CONTROL_TASKS
from ..errors import InputError
from ..network import PAPER, PRESETS, NetworkConfig
from ..phantoms.contrast import CONTRAST_CHOICES
from ..regions import REGIONS

# Phantom seeds from here on are held out for the quality benchmarks: never trained on.
HELD_OUT_SEED_START = 10000
LEVELS = ("whole", "double", "native")  # the paper's three multi-level sampling operations
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class PhantomSetConfig:
    """Procedural phantoms written to disk with a manifest, so that they take the real-data path."""

    regions: tuple[str, ...] = REGIONS
    seeds: tuple[int, int] = (0, 32)  # [start, stop) per region, training split
    val_seeds: tuple[int, int] = (9000, 9002)  # [start, stop) per region, validation split
    size: tuple[int, int, int] = (96, 96, 64)  # voxels x, y, z (PhantomConfig order)
    size_jitter: tuple[int, int, int] = (8, 8, 8)  # +- voxels per axis, drawn per seed
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5)
    lesions: tuple[int, int] = (0, 0)  # min, max lesions per phantom
    # the contrast phase of each phantom: "random" draws native, arterial or portal venous from the seed, so
    # that the prior knows enhanced scans too (PhantomConfig.contrast)
    contrast: str = "random"
    # the patient's scale (PhantomConfig.patient_scale); None shrinks each patient to fit `size`
    patient_scale: float | None = None

    def __post_init__(self) -> None:
        for name in ("seeds", "val_seeds"):
            start, stop = getattr(self, name)
            if not 0 <= start < stop:
                raise InputError(f"phantoms.{name} must be [start, stop) with 0 <= start < stop")
            if stop > HELD_OUT_SEED_START:
                raise InputError(
                    f"phantoms.{name} reaches seed {stop - 1}; seeds >= {HELD_OUT_SEED_START} are held out "
                    "for the benchmarks and must never be trained or validated on"
                )
        if max(self.seeds[0], self.val_seeds[0]) < min(self.seeds[1], self.val_seeds[1]):
            raise InputError("phantoms.seeds and phantoms.val_seeds overlap; keep validation seeds apart")
        for region in self.regions:
            if region not in REGIONS:
                raise InputError(f"unknown phantom region {region!r}; choose from {', '.join(REGIONS)}")
        if not 0 <= self.lesions[0] <= self.lesions[1]:
            raise InputError("phantoms.lesions must be [min, max] with 0 <= min <= max")
        if self.contrast not in CONTRAST_CHOICES:
            raise InputError(f"phantoms.contrast must be one of {', '.join(CONTRAST_CHOICES)}, got {self.contrast!r}")


@dataclass(frozen=True)
class DataConfig:
    manifest: str | None = None  # CSV or JSON: image, labels (optional), region, lesion (optional), split
    phantoms: PhantomSetConfig | None = None  # or: generate a phantom set and its manifest
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # working spacing in mm (x, y, z); paper 1 mm
    cache_dir: str | None = None  # preprocessed volumes (and phantoms); default <output>/cache
    level_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # whole, double, native: equal in the paper
    lowres_factor: int = 5  # super-resolution: slab thickness in working-grid slices along z (paper 5x)
    lesion_crop_probability: float = 0.5  # lesion task: native/double crops centred on a lesion voxel

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.phantoms is None):
            raise InputError("data needs exactly one of 'manifest' (a CSV or JSON file) or 'phantoms'")
        if len(self.spacing) != 3 or any(not s > 0 for s in self.spacing):
            raise InputError("data.spacing must be three positive numbers in mm")
        if len(self.level_weights) != 3 or any(w < 0 for w in self.level_weights) or not sum(self.level_weights) > 0:
            raise InputError("data.level_weights must be three non-negative weights (whole, double, native)")
        if self.lowres_factor < 1:
            raise InputError("data.lowres_factor must be at least 1")


@dataclass(frozen=True)
class TrainConfig:
    name: str = "meddifffm-model"  # the exported model's catalogue name
    description: str = ""
    network: NetworkConfig = PAPER
    data: DataConfig = field(default_factory=lambda: DataConfig(phantoms=PhantomSetConfig()))
    task: str | None = None  # None: pretraining; "superres" | "lesion": ControlNet fine-tuning
    base_model: str | None = None  # fine-tuning: the frozen base (catalogue name or card path)
    conditioning_channels: int = 16  # ControlNet conditioning stem width
    steps: int = 100_000  # optimizer steps
    batch_size: int = 1  # per process and micro-batch (paper 1)
    accumulation: int = 4  # micro-batches per optimizer step (paper 4)
    lr: float = 1e-4  # Adam (paper 1e-4)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    ema_decay: float = 0.9999
    condition_dropout: float = 0.1  # per sample and per condition
    # "auto": bf16 where the hardware computes it (a CUDA GPU with bf16; a CPU with AVX512-BF16 or AMX that
    # measures faster in bf16), fp32 elsewhere; "no": fp32; "bf16"/"fp16": autocast (device.training_precision)
    mixed_precision: str = "auto"
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0  # also checkpoint when this much wall time has passed since the last; 0: off
    keep_checkpoints: int = 2
    validate_every: int = 1000
    val_samples: int = 4  # per validation volume
    sample_every: int = 5000  # a sample image (PNG) from the EMA weights; 0 turns it off
    sample_steps: int = 50
    num_workers: int = 0  # DataLoader processes that build samples ahead of the step (0: inline)
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: one per core); fix it for bit-reproducible CPU training
    deterministic: bool = True
    channels_last: bool | None = None  # channels-last-3d weights and activations; None: on the CPU only
    compile: bool = False  # torch.compile the training step (minutes of compiling, then faster steps)

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in CONTROL_TASKS:
            raise InputError(f"task must be one of {', '.join(CONTROL_TASKS)} (or absent for pretraining)")
        if self.task is not None and not self.base_model:
            raise InputError("ControlNet fine-tuning needs base_model (the pretrained model to freeze)")
        for name in ("steps", "batch_size", "accumulation", "checkpoint_every", "validate_every", "sample_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if not self.checkpoint_minutes >= 0:
            raise InputError("checkpoint_minutes must be 0 (off) or more")
        if self.threads is not None and self.threads < 1:
            raise InputError("threads must be at least 1 (or null: one per core)")
        if self.num_workers < 0:
            raise InputError("num_workers must be 0 or more")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError("ema_decay must lie in [0, 1)")
        if not 0.0 <= self.condition_dropout <= 1.0:
            raise InputError("condition_dropout must lie in [0, 1]")

    @property
    def window(self) -> int:
        return self.network.window_size

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _network(value: Any) -> NetworkConfig:
    if isinstance(value, NetworkConfig):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise InputError(f"unknown network preset {value!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[value]
    if not isinstance(value, dict):
        raise InputError("network must be a preset name or a dictionary of NetworkConfig fields")
    value = dict(value)
    base = _network(value.pop("preset")) if "preset" in value else None
    try:
        if base is not None:
            merged = base.to_dict() | value
            return NetworkConfig.from_dict(merged)
        return NetworkConfig.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad network config: {exc}") from exc


def _build(cls, data: Any, where: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"unknown {where} keys: {', '.join(unknown)} (known: {', '.join(names)})")
    values = {}
    for key, value in data.items():
        if key == "network":
            value = _network(value)
        elif key == "data":
            value = _build(DataConfig, value, "data")
        elif key == "phantoms" and value is not None:
            value = _build(PhantomSetConfig, value, "data.phantoms")
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"bad {where}: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "config")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a JSON or YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path} is YAML but PyYAML is not installed; `pip install pyyaml` or use JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of config fields")
    return data


def load_config(path: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a file; keyword overrides (None = keep the file's value) win, and a
    'data.<field>' key overrides a data field."""
    data = read_config_file(path)
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("data."):
            section = dict(data.get("data") or {})
            section[key[5:]] = value
            if key == "data.manifest":
                section.pop("phantoms", None)  # a manifest given on the command line replaces phantoms
            data["data"] = section
        else:
            data[key] = value
    return config_from_dict(data)
