"""denoise: its config and command (the task: tasks/denoise.py)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Command, File, Setting, nested
from .common import ANATOMY, DEVICE, MODEL, REGION, SEED, SKIP_AIR, WINDOWS, steps
from .windows import WindowConfig


@dataclass(frozen=True)
class DenoiseConfig:
    region: str = REGION.field()
    noise_level: float | None = Setting(  # HU; None: estimated
        None, "noise standard deviation of the input in HU (default: estimated from the image)", type=float, above=0).field()
    strength: float = Setting(1.0, "multiplies the noise level: >1 smooths more, <1 less (default 1)", type=float, above=0).field()
    steps: int = steps("denoise", "DiffPIR steps (default %(default)s)").field()  # from t* down to 0 (at most t* + 1)
    lam: float = Setting(10.0, "DiffPIR lambda (default 10, the paper's)", type=float, above=0).field()
    zeta: float = Setting(  # 0 deterministic, 1 fresh noise at every step
        0.0, "DiffPIR zeta in [0, 1] (default 0)", type=float, minimum=0, maximum=1).field()
    keep_detail: bool = Setting(True, "add back thresholded sub-working-grid detail (resampled runs only)",
                                cli=False).field()
    skip_air: bool = SKIP_AIR.field()
    anatomy: str | None = ANATOMY.field()  # organ label map (anatomy condition), any grid
    model: str = MODEL.field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


COMMAND = Command(
    "denoise", "zero-shot denoising (DiffPIR) of a CT", "MedDiffFMLogic.tasks.denoise", DenoiseConfig,
    files=(File("input", "the CT to denoise (file or DICOM folder); never modified", positional=True),
           File("output", "denoised CT (on the input's grid)", short="-o", required=True)),
)
