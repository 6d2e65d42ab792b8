"""demo: its config and command (the script: demo/)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Command, File, Setting
from .common import DEVICE, SEED, STEPS

# The scan: a chest like the base model's training phantoms (their field of view in plane, at least
# DEMO_FOV_MM's; their patient size, from its card; z: at most max_size slices), scanned whole, since the
# noise depends on every ray through the body; the tasks then get a crop of at most DEMO_MAX_SIZE voxels
# around the nodule and its mirror image in the other lung (192 x 144 x 48 mm at the bundled models' 1.5 mm),
# as a user would crop, which keeps the demo within minutes (README, "The two commands").
DEMO_FOV_MM = (256.0, 256.0, 192.0)
DEMO_MAX_SIZE = (128, 96, 32)


def _steps(task: str) -> Setting:
    return Setting(STEPS[task]["demo"], f"sampling steps of {task} (default %(default)s)", type=int, minimum=1)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = SEED.field()
    device: str = DEVICE.field()
    dose: float = Setting(0.25, "dose fraction of the low-dose scan", cli=False).field()
    denoise_steps: int = _steps("denoise").field()
    anomaly_steps: int = _steps("anomaly").field()
    inpaint_steps: int = _steps("inpaint").field()
    lesion_steps: int = _steps("lesion").field()
    superres_steps: int = _steps("superres").field()
    superres_factor: int | None = Setting(  # None: what the super-resolution ControlNet was trained for
        None, "slab thickness of the super-resolution input, in slices (default: what the ControlNet was trained "
              "for; 5, the paper's, when its card does not say)", type=int, minimum=2).field()
    synthesize_steps: int = _steps("synthesize").field()
    train_steps: int = Setting(
        150, "training steps of the fallback tiny model (only when the bundled models are missing)", type=int, minimum=1,
    ).field()
    # torch CPU threads. One by default: the demo's small networks gain little from a second thread, and
    # on a busy 2-core machine two threads spin against other work (a demo with two threads was still
    # in super-resolution after 25 minutes where one thread finished everything in 5.5).
    threads: int | None = Setting(
        1, "torch CPU threads (default 1; 2 may be faster on an idle 2-core machine)", type=int, minimum=0).field()
    max_size: tuple[int, int, int] = Setting(DEMO_MAX_SIZE, "phantom voxels (x, y, z) at most", cli=False).field()


COMMAND = Command(
    "demo", "a chest phantom with a nodule and its low-dose scan through every task", "MedDiffFMLogic.demo",
    DemoConfig, files=(File("output", "output folder (default demo_out)", short="-o", default="demo_out"),),
    options=("common",),
)
