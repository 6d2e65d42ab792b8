"""superres: its config and command (the task: tasks/superres.py)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Command, File, Setting, nested
from .common import ANATOMY, DEFAULT_SUPERRES, DEVICE, MODEL, REGION, SEED, SKIP_AIR, WINDOWS, steps
from .windows import WindowConfig

PAPER_FACTOR = 5.0


@dataclass(frozen=True)
class SuperresConfig:
    region: str = REGION.field()
    factor: float | None = Setting(
        PAPER_FACTOR, "thin slices per thick slice (default 5, the paper's)", type=float, above=1, exclusive="target").field()
    spacing: float | None = Setting(  # overrides factor
        None, "target slice spacing in mm (instead of --factor)", type=float, above=0, exclusive="target").field()
    steps: int = steps("superres", "DiffPIR steps (default %(default)s; paper 100)").field()  # from T - 1
    sigma_n: float = Setting(1.0, "DiffPIR sigma_n in [-1, 1] units (default 1, the paper's)", type=float, above=0).field()
    lam: float = Setting(1.0, "DiffPIR lambda (default 1, the paper's)", type=float, above=0).field()
    zeta: float = Setting(0.0, "DiffPIR zeta in [0, 1] (default 0)", type=float, minimum=0, maximum=1).field()
    consistency: bool = Setting(  # make every thick slab's average equal the input exactly
        True, "do not force each thick slab's average to the input", action="store_false",
        flag="--no-consistency").field()
    skip_air: bool = SKIP_AIR.field()
    controlnet: str = Setting(DEFAULT_SUPERRES, "super-resolution ControlNet (default %(default)s)").field()
    anatomy: str | None = ANATOMY.field(help="organ label map (optional condition; any grid overlapping the CT)")
    model: str = MODEL.field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


COMMAND = Command(
    "superres", "through-plane super-resolution: thin slices from thick ones (ControlNet)",
    "MedDiffFMLogic.tasks.superres", SuperresConfig,
    files=(File("input", "the thick-slice CT (file or DICOM folder); never modified", positional=True),
           File("output", "the thin-slice CT (same in-plane grid and extent)", short="-o", required=True)),
)
