"""Settings many commands share: the body region, the anatomy condition, the models, the seed and the
device, --skip-air; the default models' names; and every task's default sampling steps."""

from __future__ import annotations

from ..progress import PROGRESS_MODES
from ..regions import AUTO_REGION, REGION_CHOICES
from . import Setting

DEFAULT_MODEL = "meddifffm-base-demo"
DEFAULT_SUPERRES = "meddifffm-superres-demo"
DEFAULT_LESION = "meddifffm-lesion-demo"
# device.DEVICE_CHOICES holds the same names (device.py imports torch; this module must not).
DEVICES = ("auto", "cpu", "cuda", "mps")

COMMON = "common options"
WINDOWS = "sliding window (memory and speed)"

# Sampling steps, every table of them: a task's default ("default"), the demo's (fewer, so that the
# whole demo runs in minutes on a CPU), and the Slicer module's speed presets. Denoising takes one
# DiffPIR step: on the CPU-scale base it beat ten steps in every region and dose, in PSNR and SSIM
# (docs/training.md, "learning curve"), so its presets differ only in the window overlap.
STEPS: dict[str, dict[str, int]] = {
    "denoise": {"default": 1, "demo": 1, "fast": 1, "balanced": 1, "quality": 1},
    "anomaly": {"default": 25, "demo": 20, "fast": 10, "balanced": 25, "quality": 50},
    "inpaint": {"default": 25, "demo": 20, "fast": 20, "balanced": 50, "quality": 100},
    "lesion": {"default": 25, "demo": 20, "fast": 20, "balanced": 50, "quality": 100},
    "superres": {"default": 50, "demo": 25, "fast": 20, "balanced": 50, "quality": 100},
    "synthesize": {"default": 50, "demo": 25, "fast": 10, "balanced": 50, "quality": 100},
}
# The Slicer module's presets also set the window overlap.
PRESET_OVERLAP = {"fast": 0.125, "balanced": 0.25, "quality": 0.5}

REGION = Setting(AUTO_REGION, "body region: sets the HU window and the region condition; auto (the default) "
                              "detects it from the scan (lungs, skull and brain, abdomen) and says which, "
                              "synthesis from the --anatomy label map", choices=REGION_CHOICES)
ANATOMY = Setting(None, "organ label map of the input (optional condition)")
MODEL = Setting(DEFAULT_MODEL, "base model name or card (default %(default)s)")
SEED = Setting(0, "random seed; the same seed repeats the output", type=int, minimum=0, group=COMMON)
DEVICE = Setting("auto", "where to run (default: %(default)s)", choices=DEVICES, group=COMMON)
PROGRESS = Setting(None, "progress report: a bar (default on a terminal), JSON lines on stdout, or none",
                   choices=PROGRESS_MODES, group=COMMON)
FORCE = Setting(False, "run on an input whose values are implausible for a CT in HU (e.g. an MR), with a warning",
                action="store_true", group=COMMON)
SKIP_AIR = Setting(
    False,
    "do not run the network on windows wholly outside the body (found by thresholding the input at -500 HU); "
    "the clean image there is taken to be air (-1000 HU). Faster when air surrounds the body; changes the "
    "result slightly in the air only (default off)",
    action="store_true", group=WINDOWS,
)
THREADS = Setting(None, "CPU threads for the network (default: torch's, one per core); fewer leaves cores to "
                        "other work", type=int, minimum=0, group=WINDOWS)


def steps(task: str, help: str) -> Setting:
    """The `steps` setting of a task, its default from STEPS."""
    return Setting(STEPS[task]["default"], help, type=int, minimum=1)
