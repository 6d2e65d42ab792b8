"""`meddifffm train-recipe`: the three demonstration models (base, super-resolution and lesion
ControlNets) trained one after the other on one GPU at a larger batch, into a folder.

The configs are training/configs/gpu-*.json: the demo-* settings (SMALL network, 32^3 windows at 4 mm,
the same phantoms) with a batch of 32 instead of 4, more steps, data workers and bf16 where the GPU has
it. The models keep the bundled models' names, so that the folder can replace MedDiffFMLogic/models/
once they are validated (benchmarks/quality.py --model <folder>/meddifffm-base-demo ...). Each run keeps
its logs and checkpoints under <folder>/runs/, and the recipe resumes where it stopped when run again.
`--dry-run` does the same with the TINY network, a few small phantoms and 2 steps, on any device: the
test of the recipe on a CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import SILENT, Progress
from .commands import CONFIG_DIR, _command_line

if TYPE_CHECKING:  # the command line is built without torch: config imports the network
    from .config import TrainConfig

RECIPE = ("gpu-base", "gpu-superres", "gpu-lesion")


def dry_run_config(config: TrainConfig) -> TrainConfig:
    """The same recipe shrunk to seconds: TINY network, two small phantoms per region, 2 steps."""
    from ..network import TINY

    phantoms = dataclasses.replace(config.data.phantoms, regions=("chest", "abdomen"), size=(40, 40, 32),
                                   size_jitter=(2, 2, 2), spacing=(4.0, 4.0, 4.0),
                                   seeds=(config.data.phantoms.seeds[0], config.data.phantoms.seeds[0] + 1),
                                   val_seeds=(config.data.phantoms.val_seeds[0], config.data.phantoms.val_seeds[0] + 1))
    network = config.network if config.task else TINY
    return dataclasses.replace(config, network=network, data=dataclasses.replace(config.data, phantoms=phantoms),
                               steps=2, batch_size=2, num_workers=0, validate_every=2, checkpoint_every=2,
                               sample_every=0, val_samples=1, compile=False)


def run_recipe(folder: str | Path, device: str = "auto", dry_run: bool = False, cache_dir: str | None = None,
               progress: Progress = SILENT) -> dict[str, str]:
    """Train the three models into `folder`; returns their model cards' paths."""
    from .config import load_config
    from .trainer import Trainer

    folder = Path(folder)
    cache = cache_dir or str(folder / "cache")
    outputs: dict[str, str] = {}
    base_card = None
    for name in RECIPE:
        config = load_config(CONFIG_DIR / f"{name}.json", **{"data.cache_dir": cache})
        if config.task is not None:
            config = dataclasses.replace(config, base_model=base_card)  # the base trained just now
        if dry_run:
            config = dry_run_config(config)
        trainer = Trainer(config, folder / "runs" / config.name, export_dir=folder / config.name,
                          command=_command_line(), config_file=str(CONFIG_DIR / f"{name}.json"), device=device,
                          progress=progress)
        done = trainer.run(resume=True)  # run again after an interruption: each run goes on where it stopped
        outputs[config.task or "base"] = done["model"]
        if config.task is None:
            base_card = done["model"]
    return outputs


def add_command(subparsers) -> None:
    from ..cli_args import DEVICE, PROGRESS

    p = subparsers.add_parser(
        "train-recipe", help="train the three demonstration models on one GPU (minutes) into a folder",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("-o", "--output", required=True, help="folder for the three models (and runs/, cache/)")
    p.add_argument("--cache-dir", help="phantoms and preprocessed volumes (default <output>/cache)")
    p.add_argument("--dry-run", action="store_true", help="TINY network, small phantoms, 2 steps: checks the recipe")
    DEVICE.add_to(p, "device")
    PROGRESS.add_to(p, "progress")
    p.set_defaults(run=lambda args, progress: run_recipe(args.output, args.device, args.dry_run, args.cache_dir,
                                                         progress))
