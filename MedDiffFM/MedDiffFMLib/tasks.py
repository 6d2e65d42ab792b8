"""What the module knows about each engine task: its panel, its inputs, its engine arguments, the files
it writes and how each comes back into the scene. No qt, vtk or slicer here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

REGIONS = ("head_neck", "chest", "abdomen")
# The engine's lesion ControlNet: "Inpaint lesion" draws a lesion with it instead of healthy tissue.
LESION_CONTROLNET = "meddifffm-lesion-demo"
DEVICES = ("auto", "cpu", "cuda")
PRESETS = ("fast", "balanced", "quality")
# The engine's --precision: fp32 exact; bf16 about 2x faster on recent CPUs and GPUs (about 1 % error);
# fp16 on CUDA only.
PRECISIONS = ("fp32", "bf16", "fp16")
# Tasks with the engine's --skip-air: their input shows where the body is.
SKIP_AIR_TASKS = ("denoise", "anomaly", "superres")


@dataclass(frozen=True)
class Preset:
    """Speed against quality: sampling steps per task and the sliding-window overlap."""

    steps: dict[str, int]
    overlap: float


PRESET_SETTINGS: dict[str, Preset] = {
    "fast": Preset({"denoise": 5, "anomaly": 10, "inpaint": 20, "lesion": 20, "superres": 20, "synthesize": 10}, 0.125),
    "balanced": Preset({"denoise": 10, "anomaly": 25, "inpaint": 50, "lesion": 50, "superres": 50, "synthesize": 50}, 0.25),
    "quality": Preset({"denoise": 20, "anomaly": 50, "inpaint": 100, "lesion": 100, "superres": 100, "synthesize": 100}, 0.5),
}


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


@dataclass(frozen=True)
class TaskParameters:
    """Every setting of the panels, as plain values (the parameter node's content, and the batch API's)."""

    region: str = "chest"
    model: str = ""  # "" = the engine's default model for the task
    device: str = "auto"
    preset: str = "balanced"
    seed: int = 0
    steps: int = 0  # sampling steps; 0 = the preset's
    precision: str = "fp32"
    skip_air: bool = False  # skip windows wholly outside the body (denoise, anomaly, super-resolution)
    # Denoise: noise_level in HU (0 = estimate it from the image), strength multiplies it.
    noise_level: float = 0.0
    strength: float = 1.0
    # Anomaly map: threshold on the map for the mask (0 = the engine's default).
    threshold: float = 0.0
    # Inpaint lesion: draw a lesion with the lesion ControlNet (True) or fill with healthy tissue (False).
    inpaint_lesion: bool = False
    controlnet: str = ""  # "" = the engine's default ControlNet for lesion and super-resolution
    # Super-resolution: a factor along the slice axis, or a target slice spacing in mm (0 = use the factor).
    factor: float = 5.0
    spacing: float = 0.0
    # Synthesize: voxels (x, y, z) and isotropic spacing in mm (0 = the model's), ignored with anatomy.
    size: tuple[int, int, int] = (64, 64, 64)
    synth_spacing: float = 0.0
    extra: tuple[str, ...] = field(default_factory=tuple)  # more engine arguments, verbatim

    def with_(self, **changes: Any) -> "TaskParameters":
        return replace(self, **changes)

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
        if task == "denoise" and (self.strength <= 0 or self.noise_level < 0):
            raise ValueError("denoising needs a positive strength and a noise level of 0 (estimate) or more")
        if task == "superres" and self.spacing <= 0 and self.factor <= 1:
            raise ValueError("super-resolution needs a factor above 1 or a target spacing in mm")
        if self.steps < 0:
            raise ValueError(f"the number of steps must be positive (or 0 for the preset's), not {self.steps}")
        if task == "synthesize" and any(int(s) < 1 for s in self.size):
            raise ValueError(f"the synthesized volume needs a positive size, not {self.size}")


def _number(value: float) -> str:
    return repr(float(value))


def engine_arguments(task: str, params: TaskParameters, files: dict[str, str]) -> list[str]:
    """The engine's command-line arguments (after the command name) for one run.

    `files` maps roles to paths: "input" (the CT), "mask" (a binary label map of the task's segment),
    "anatomy" (an organ label map), and one entry per Output.key for the files to write.
    """
    params.check(task)
    info = TASKS[task]
    preset = PRESET_SETTINGS[params.preset]
    args: list[str] = []
    if info.needs_volume:
        args.append(files["input"])
    args += ["--output", files["output"]]
    for out in info.outputs[1:]:
        if out.key in files:
            args += [f"--{out.key}", files[out.key]]
    args += ["--region", params.region]
    if task == "denoise":
        if params.noise_level > 0:
            args += ["--noise-level", _number(params.noise_level)]
        args += ["--strength", _number(params.strength)]
    elif task == "anomaly":
        if "mask" in files:
            args += ["--roi", files["mask"]]
        if params.threshold > 0:
            args += ["--threshold", _number(params.threshold)]
    elif task in ("inpaint", "lesion"):
        args += ["--mask", files["mask"]]
    elif task == "superres":
        args += ["--spacing", _number(params.spacing)] if params.spacing > 0 else ["--factor", _number(params.factor)]
    elif task == "synthesize":
        if "anatomy" not in files:
            args += ["--size", ",".join(str(int(s)) for s in params.size)]
            if params.synth_spacing > 0:
                args += ["--spacing", _number(params.synth_spacing)]
    if task == "inpaint" and params.inpaint_lesion:
        args += ["--controlnet", params.controlnet or LESION_CONTROLNET]
    elif task in ("lesion", "superres") and params.controlnet:
        args += ["--controlnet", params.controlnet]
    if "anatomy" in files:
        args += ["--anatomy", files["anatomy"]]
    if params.model:
        args += ["--model", params.model]
    args += ["--steps", str(params.steps or preset.steps[task]), "--overlap", _number(preset.overlap)]
    args += ["--precision", params.precision]
    if params.skip_air and task in SKIP_AIR_TASKS:
        args.append("--skip-air")
    args += ["--device", params.device, "--seed", str(int(params.seed))]
    args += list(params.extra)
    return args


def output_files(task: str, folder: str, extension: str = ".nrrd") -> dict[str, str]:
    """Where a run writes each of its outputs, inside its temporary folder."""
    import os

    return {out.key: os.path.join(folder, f"{out.key}{extension}") for out in TASKS[task].outputs}


def result_name(input_name: str | None, task: str, output: Output, region: str = "") -> str:
    base = input_name or (region.replace("_", "-") + " CT" if region else "CT")
    return f"{base} {output.suffix}"
