"""What the module knows about each engine task: its panel, its inputs, its engine arguments, the files
it writes and how each comes back into the scene. No qt, vtk or slicer here.

The settings themselves are the engine's: their defaults, choices, flags and help text come from the
engine's declarations (MedDiffFMLogic.settings, which imports neither torch nor MONAI nor SimpleITK),
imported from the engine the runs start (runner.import_engine_module); nothing here repeats them.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field, replace
from typing import Any

from . import runner

_commands = runner.import_engine_module("settings.commands")
from MedDiffFMLogic.settings import Setting  # noqa: E402  (importable now, from the engine the runs use)
from MedDiffFMLogic.settings.common import PRESET_OVERLAP, STEPS  # noqa: E402

# The engine's task configs (frozen dataclasses whose fields carry their Setting), by command name.
CONFIGS: dict[str, type] = {c.name: c.config for c in _commands.COMMANDS}


@dataclass(frozen=True)
class Output:
    """One file an engine run writes, and what it becomes in the scene."""

    key: str  # the engine's flag without dashes ("output", "mask-out", ...)
    kind: str  # "volume", "heatmap" or "segmentation"
    suffix: str  # the new node is named "<input> <suffix>"
    optional: bool = False  # written only when asked for


@dataclass(frozen=True)
class TaskInfo:
    name: str  # the engine command
    title: str  # the panel's title
    needs_volume: bool
    segment: str | None  # role of the task's segment: "mask" (required), "roi" (optional) or None
    # (the panels have their own segment selectors; the parameter node keeps one per task)
    outputs: tuple[Output, ...]
    help: str = ""


TASKS: dict[str, TaskInfo] = {
    "denoise": TaskInfo(
        "denoise", "Denoise", True, None,
        (Output("output", "volume", "denoised"),),
        "Zero-shot denoising (DiffPIR): a low-dose or noisy CT becomes a cleaner one on the same grid.",
    ),
    "anomaly": TaskInfo(
        "anomaly", "Anomaly map", True, "roi",
        (Output("output", "heatmap", "anomaly map"), Output("mask-out", "segmentation", "anomaly")),
        "Zero-shot anomaly detection: the scan is diffused and rebuilt as healthy; the difference is the map.",
    ),
    "inpaint": TaskInfo(
        "inpaint", "Inpaint lesion", True, "mask",
        (Output("output", "volume", "inpainted"),),
        "Replaces the voxels inside the mask with healthy-looking tissue; every voxel outside is kept.",
    ),
    "lesion": TaskInfo(
        "lesion", "Generate lesion", True, "mask",
        (Output("output", "volume", "with lesion"),),
        "Draws a synthetic lesion inside the mask (lesion ControlNet).",
    ),
    "superres": TaskInfo(
        "superres", "Super-resolution", True, None,
        (Output("output", "volume", "super-resolved"),),
        "Thin slices from thick ones (super-resolution ControlNet), 5x along the slice axis by default.",
    ),
    "synthesize": TaskInfo(
        "synthesize", "Synthesize", False, None,
        (Output("output", "volume", "synthesized"),),
        "Samples a whole CT of a body region, optionally following an organ segmentation.",
    ),
}


def declaration(task: str, name: str) -> Setting:
    """The engine's declaration of a setting of a task's config: "noise_level", or "windows.overlap" for
    one of a nested config. KeyError when the task's command line does not offer it."""
    config = CONFIGS[task]
    *path, last = name.split(".")
    for part in path:
        config = _fields(config)[part].default_factory
    f = _fields(config).get(last)
    if f is None or "setting" not in f.metadata or not f.metadata["setting"].cli:
        raise KeyError(f"the engine's {task} command has no setting {name!r}")
    return f.metadata["setting"]


def flag(task: str, name: str) -> str:
    """The engine's command-line flag of a task's setting ("--noise-level")."""
    return declaration(task, name).flag_for(name.split(".")[-1])


def _fields(config: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config)}


def _declares(task: str, name: str) -> bool:
    try:
        declaration(task, name)
    except KeyError:
        return False
    return True


REGIONS = declaration("denoise", "region").choices
DEVICES = declaration("denoise", "device").choices
PRECISIONS = declaration("denoise", "windows.precision").choices
# The engine's lesion ControlNet: "Inpaint lesion" draws a lesion with it instead of healthy tissue.
LESION_CONTROLNET = declaration("lesion", "controlnet").default
# Tasks with the engine's --skip-air: their input shows where the body is.
SKIP_AIR_TASKS = tuple(t for t in TASKS if _declares(t, "skip_air"))

# The panels' settings that are engine settings: TaskParameters field -> (the tasks whose config
# declares it, the config's field). Their defaults, choices, flags and help text are the engine's.
ENGINE_SETTINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "region": (tuple(TASKS), "region"),
    "model": (tuple(TASKS), "model"),
    "device": (tuple(TASKS), "device"),
    "seed": (tuple(TASKS), "seed"),
    "precision": (tuple(TASKS), "windows.precision"),
    "skip_air": (SKIP_AIR_TASKS, "skip_air"),
    "noise_level": (("denoise",), "noise_level"),
    "strength": (("denoise",), "strength"),
    "threshold": (("anomaly",), "threshold"),
    "factor": (("superres",), "factor"),
    "spacing": (("superres",), "spacing"),
    "size": (("synthesize",), "size"),
    "synth_spacing": (("synthesize",), "spacing"),
}


def engine_setting(field_name: str) -> Setting:
    """The engine's declaration behind a TaskParameters field (its first task's where several share it)."""
    owners, name = ENGINE_SETTINGS[field_name]
    return declaration(owners[0], name)


def _default(field_name: str) -> Any:
    return engine_setting(field_name).default


@dataclass(frozen=True)
class Preset:
    """Speed against quality: sampling steps per task and the sliding-window overlap."""

    steps: dict[str, int]
    overlap: float


# The presets are rows of the engine's one table of step counts (settings.common.STEPS).
PRESETS = tuple(PRESET_OVERLAP)
DEFAULT_PRESET = "balanced"
PRESET_SETTINGS: dict[str, Preset] = {
    name: Preset({task: STEPS[task][name] for task in TASKS}, PRESET_OVERLAP[name]) for name in PRESETS
}


@dataclass(frozen=True)
class TaskParameters:
    """Every setting of the panels, as plain values (the parameter node's content, and the batch API's).

    The defaults are the engine's. A setting whose engine default is None (noise_level, threshold,
    spacing, synth_spacing: the engine estimates or derives it) is also unset when 0, which is how the
    panels' spin boxes, which cannot be empty, say "the engine's default"."""

    region: str = _default("region")
    model: str = ""  # "" = the engine's default model for the task
    device: str = _default("device")
    preset: str = DEFAULT_PRESET
    seed: int = _default("seed")
    steps: int = 0  # sampling steps; 0 = the preset's
    precision: str = _default("precision")
    skip_air: bool = _default("skip_air")  # only the tasks in SKIP_AIR_TASKS use it
    noise_level: float | None = _default("noise_level")  # denoise, HU
    strength: float = _default("strength")  # denoise
    threshold: float | None = _default("threshold")  # anomaly, HU on the map
    # Inpaint lesion: draw a lesion with the lesion ControlNet (True) or fill with healthy tissue (False).
    inpaint_lesion: bool = False
    controlnet: str = ""  # "" = the engine's default ControlNet for lesion and super-resolution
    factor: float = _default("factor")  # superres; a given `spacing` wins
    spacing: float | None = _default("spacing")  # superres, mm
    # Synthesize (both ignored with an anatomy segmentation): voxels, and mm (one number: isotropic).
    size: tuple[int, int, int] = _default("size")
    synth_spacing: float | tuple[float, float, float] | None = _default("synth_spacing")
    extra: tuple[str, ...] = field(default_factory=tuple)  # more engine arguments, verbatim

    def with_(self, **changes: Any) -> "TaskParameters":
        return replace(self, **changes)

    def given(self, field_name: str) -> bool:
        """Whether a setting has a value to pass, rather than leaving it to the engine."""
        value = getattr(self, field_name)
        if value is None or value == "":
            return False
        return not (_default(field_name) is None and isinstance(value, numbers.Number) and value == 0)

    def check(self, task: str) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r}; choose one of {', '.join(REGIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if task == "denoise" and (self.strength <= 0 or (self.noise_level or 0) < 0):
            raise ValueError("denoising needs a positive strength and a noise level of 0 (estimate) or more")
        if task == "superres" and not self.given("spacing") and self.factor <= 1:
            raise ValueError("super-resolution needs a factor above 1 or a target spacing in mm")
        if self.steps < 0:
            raise ValueError(f"the number of steps must be positive (or 0 for the preset's), not {self.steps}")
        if task == "synthesize" and any(int(s) < 1 for s in self.size):
            raise ValueError(f"the synthesized volume needs a positive size, not {self.size}")


def _text(value: Any) -> str:
    """A value as the engine's parser reads it (a tuple as "X,Y,Z")."""
    if isinstance(value, (tuple, list)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _settings_to_pass(task: str, params: TaskParameters, files: dict[str, str]) -> list[tuple[str, Any]]:
    """(the config's field, value) of the panel settings this run passes to the engine."""
    out = []
    for field_name, (owners, name) in ENGINE_SETTINGS.items():
        if task not in owners or not params.given(field_name):
            continue
        if task == "superres" and field_name == "factor" and params.given("spacing"):
            continue  # the engine takes one of the two
        if task == "synthesize" and field_name in ("size", "synth_spacing") and "anatomy" in files:
            continue  # the anatomy map's grid is the output grid
        out.append((name, getattr(params, field_name)))
    return out


def engine_arguments(task: str, params: TaskParameters, files: dict[str, str]) -> list[str]:
    """The engine's command-line arguments (after the command name) for one run.

    `files` maps roles to paths: "input" (the CT), "mask" (a binary label map of the task's segment),
    "anatomy" (an organ label map), and one entry per Output.key for the files to write.
    """
    params.check(task)
    info = TASKS[task]
    preset = PRESET_SETTINGS[params.preset]
    args: list[str] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, bool):  # a store_true flag
            args.extend([flag(task, name)] if value else [])
        else:
            args.extend([flag(task, name), _text(value)])

    if info.needs_volume:
        args.append(files["input"])
    args += ["--output", files["output"]]
    for out in info.outputs[1:]:
        if out.key in files:
            args += [f"--{out.key}", files[out.key]]
    if task == "anomaly" and "mask" in files:
        add("roi", files["mask"])
    elif task in ("inpaint", "lesion"):
        args += ["--mask", files["mask"]]
    if "anatomy" in files:
        add("anatomy", files["anatomy"])
    for name, value in _settings_to_pass(task, params, files):
        add(name, value)
    if task == "inpaint" and params.inpaint_lesion:
        add("controlnet", params.controlnet or LESION_CONTROLNET)
    elif task in ("lesion", "superres") and params.controlnet:
        add("controlnet", params.controlnet)
    add("steps", params.steps or preset.steps[task])
    add("windows.overlap", preset.overlap)
    return args + list(params.extra)


def output_files(task: str, folder: str, extension: str = ".nrrd") -> dict[str, str]:
    """Where a run writes each of its outputs, inside its temporary folder."""
    return {out.key: os.path.join(folder, f"{out.key}{extension}") for out in TASKS[task].outputs}


def result_name(input_name: str | None, task: str, output: Output, region: str = "") -> str:
    named = region and region != "auto"  # "auto CT" names nothing; the engine chose and said which
    base = input_name or (region.replace("_", "-") + " CT" if named else "CT")
    return f"{base} {output.suffix}"
