"""synthesize: its config and command (the task: tasks/synthesize.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..cli_args import triple
from . import Command, File, Setting, nested
from .common import ANATOMY, DEVICE, MODEL, REGION, SEED, WINDOWS, steps
from .windows import WindowConfig


@dataclass(frozen=True)
class SynthesizeConfig:
    region: str = REGION.field()
    size: tuple[int, int, int] = Setting(  # ignored when anatomy is given
        (64, 64, 64), "voxels X,Y,Z (default 64,64,64)", type=triple(int), minimum=1).field()
    spacing: tuple[float, float, float] | None = Setting(  # None: the model's working spacing
        None, "mm X,Y,Z (default: the model's)", type=triple(float), above=0).field()
    anatomy: str | None = ANATOMY.field(help="organ label map to follow; its grid becomes the output grid")
    model: str = MODEL.field()
    steps: int = steps("synthesize", "sampling steps (default %(default)s)").field()
    eta: float = Setting(0.0, "DDIM eta", cli=False).field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


COMMAND = Command(
    "synthesize", "sample a whole CT volume of a region", "MedDiffFMLogic.tasks.synthesize", SynthesizeConfig,
    files=(File("output", "the synthesized CT (.nii.gz, .nrrd, .mha)", short="-o", required=True),),
)
