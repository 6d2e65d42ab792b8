"""`meddifffm train-recipe`: the three models of the CPU scale (base, super-resolution and lesion
ControlNets) trained one after the other on one GPU at a larger batch, into a folder.

The configs are training/configs/gpu-*.json: the cpu-* settings (the `cpu` network, 32^3 training windows
on a 1.5 mm grid, the same adult-size phantoms, super-resolution slabs and lesion crops) at a batch of 32
instead of 4, with the learning rate, EMA decay and step counts of a run of minutes, 8 data workers and
bf16 where the GPU has it. The models keep the bundled models' names, so that the folder can replace
MedDiffFMLogic/models/ once they are validated (benchmarks/quality.py --model <folder>/meddifffm-base-demo
...). Each run keeps its logs and checkpoints under <folder>/runs/, and the recipe resumes where it stopped
when run again. Every invocation appends its wall times per model (phantoms, preprocessing and training
together, and the training steps alone) and the device settings to <folder>/recipe.json, so that the step
counts, sized by an estimate, can be corrected from a real run. `--dry-run` does the same with the TINY
network, a few small phantoms at 4 mm and 2 steps, on any device: the test of the recipe on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import SILENT, Progress
from .commands import CONFIG_DIR, _command_line, recorded_path

if TYPE_CHECKING:  # the command line is built without torch: config imports the network
    from .config import TrainConfig

RECIPE = ("gpu-base", "gpu-superres", "gpu-lesion")


def dry_run_config(config: TrainConfig) -> TrainConfig:
    """The same recipe shrunk to seconds: TINY network, two small phantoms per region at 4 mm (each
    patient shrunk to fit its 16 cm field of view), a 4 mm working grid, 2 steps."""
    from ..network import TINY

    phantoms = dataclasses.replace(config.data.phantoms, regions=("chest", "abdomen"), size=(40, 40, 32),
                                   size_jitter=(2, 2, 2), spacing=(4.0, 4.0, 4.0), patient_scale=None,
                                   seeds=(config.data.phantoms.seeds[0], config.data.phantoms.seeds[0] + 1),
                                   val_seeds=(config.data.phantoms.val_seeds[0], config.data.phantoms.val_seeds[0] + 1))
    network = config.network if config.task else TINY
    data = dataclasses.replace(config.data, phantoms=phantoms, spacing=(4.0, 4.0, 4.0))
    return dataclasses.replace(config, network=network, data=data, steps=2, batch_size=2, num_workers=0,
                               validate_every=2, checkpoint_every=2, sample_every=0, val_samples=1, compile=False)


def _previous_times(path: Path) -> list[dict]:
    try:
        return list(json.loads(path.read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not ours: start the record afresh
        return []


def _write_times(path: Path, runs: list[dict]) -> None:
    """recipe.json written whole to a temporary file and renamed: an interruption never leaves half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    os.replace(tmp, path)


def run_recipe(folder: str | Path, device: str = "auto", dry_run: bool = False, cache_dir: str | None = None,
               progress: Progress = SILENT) -> dict[str, str]:
    """Train the three models into `folder`; returns their model cards' paths."""
    from ..modelfiles import read_card
    from .config import load_config
    from .trainer import Trainer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache = cache_dir or str(folder / "cache")
    outputs: dict[str, str] = {}
    base_card = None
    started = time.monotonic()
    # the step counts of the gpu-* configs are an estimate; these times are what a GPU session corrects them by
    times = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": dry_run, "models": {}}
    previous = _previous_times(folder / "recipe.json")  # earlier invocations (a resumed recipe) stay recorded
    for name in RECIPE:
        config = load_config(CONFIG_DIR / f"{name}.json", **{"data.cache_dir": cache})
        if config.task is not None:
            config = dataclasses.replace(config, base_model=base_card)  # the base trained just now
        if dry_run:
            config = dry_run_config(config)
        trainer = Trainer(config, folder / "runs" / config.name, export_dir=folder / config.name,
                          command=_command_line(), config_file=recorded_path(CONFIG_DIR / f"{name}.json"), device=device,
                          progress=progress)
        stage_started = time.monotonic()
        done = trainer.run(resume=True)  # run again after an interruption: each run goes on where it stopped
        wall = time.monotonic() - stage_started
        training = read_card(done["model"]).provenance.get("wall_seconds_training")
        times["models"][config.name] = {
            "config": name, "steps": config.steps, "batch_size": config.batch_size,
            "wall_seconds": round(wall, 1),  # this invocation: phantoms, preprocessing, training, export
            "training_seconds": training,  # the training steps alone, over every invocation of this run
            "settings": trainer.speed_settings(),
        }
        times["total_wall_seconds"] = round(time.monotonic() - started, 1)
        _write_times(folder / "recipe.json", previous + [times])
        progress.note("recipe", f"{config.name}: {wall:.0f} s wall, {training} s in {config.steps} training steps "
                                f"of batch {config.batch_size}")
        outputs[config.task or "base"] = done["model"]
        if config.task is None:
            base_card = done["model"]
    progress.note("recipe", f"three models in {time.monotonic() - started:.0f} s; times in {folder / 'recipe.json'}")
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
