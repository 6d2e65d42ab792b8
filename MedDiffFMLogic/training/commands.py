"""`meddifffm train` and `meddifffm finetune`: found by cli.py's command discovery.

The same command runs as one process or, under torchrun, as one process per GPU (or CPU worker):
  torchrun --nproc_per_node 4 -m MedDiffFMLogic train --config paper.json --manifest data.csv
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import InputError
from ..settings import Setting

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_PROJECT = CONFIG_DIR.parents[2]

# The numbers train and finetune take, bounded like every task's (settings.check_numbers, before any
# work): a negative --threads would otherwise reach torch.set_num_threads and end in a traceback.
STEPS = Setting(None, "optimizer steps (overrides the config)", type=int, minimum=1)
THREADS = Setting(None, "torch CPU threads (overrides the config)", type=int, minimum=1)


def resolve_config(name: str) -> Path:
    """A config file path, or the name of a config shipped in training/configs (with or without .json)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.json"):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
    raise InputError(f"config {name!r} is neither a file nor a shipped config ({shipped})")


def recorded_path(path: Path) -> str:
    """A config file's path as a model card records it: relative to the project for a shipped config, so
    that a committed card does not carry the path of the machine that trained it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(_PROJECT)) if resolved.is_relative_to(_PROJECT) else str(path)


def _command_line() -> str:
    return "meddifffm " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _check_finetune_config(path: Path, task: str) -> None:
    """A ControlNet is trained from a ControlNet config: one whose task is this task (its name, steps
    and learning rate are a ControlNet's, not a base model's)."""
    from .config import read_config_file

    given = read_config_file(path).get("task")
    if given is None:
        shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json") if "superres" in p.stem or "lesion" in p.stem))
        raise InputError(
            f"{path} is a pretraining config (it has no \"task\"), not a ControlNet's: fine-tune with a ControlNet "
            f"config ({shipped}), or add \"task\": \"{task}\" and a \"name\" of the ControlNet's own to a copy of it"
        )
    if given != task:
        raise InputError(f"{path} is a {given!r} ControlNet config, but --task is {task!r}; use a {task} config")


def _run(args, progress, task: str | None):
    from .config import load_config
    from .trainer import Trainer

    path = resolve_config(args.config)
    if task is not None:
        _check_finetune_config(path, task)
    overrides = {"steps": args.steps, "data.manifest": args.manifest, "seed": args.seed,
                 "data.cache_dir": args.cache_dir, "threads": args.threads, "name": args.name}
    if task is not None:
        overrides.update(base_model=args.base)
    config = load_config(path, **overrides)
    if task is None and config.task is not None:
        raise InputError(f"{path} is a fine-tuning config (task {config.task!r}); run `meddifffm finetune`")
    output = args.output or str(Path("runs") / config.name)
    trainer = Trainer(config, output, export_dir=args.export, command=_command_line(), config_file=recorded_path(path),
                      device=args.device, progress=progress)
    return trainer.run(resume=args.resume, overwrite=args.overwrite)


def _add_shared(p) -> None:
    from ..cli_args import add_common

    p.add_argument("--config", required=True,
                   help="JSON config file, or a shipped config name (paper, tiny, demo-*, cpu-*, gpu-*: training/configs)")
    p.add_argument("--manifest", help="CSV or JSON manifest of the training volumes (replaces the config's data source)")
    p.add_argument("-o", "--output", help="run folder: logs, checkpoints, samples, cache (default runs/<name>)")
    p.add_argument("--export", help="folder for the exported model and its loss curve (default <output>/model)")
    STEPS.add_to(p, "steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an output folder that holds a run (deletes its logs, checkpoints and model)")
    p.add_argument("--name", help="the exported model's catalogue name (overrides the config's)")
    p.add_argument("--cache-dir", help="folder of preprocessed volumes (overrides the config)")
    THREADS.add_to(p, "threads")
    add_common(p)
    p.set_defaults(seed=None)  # --seed overrides the config's seed only when given


def add_command(subparsers) -> None:
    from . import recipe, regions_cut

    p = subparsers.add_parser("train", help="pretrain the diffusion model (single process or under torchrun)")
    _add_shared(p)
    p.set_defaults(run=lambda args, progress: _run(args, progress, None))

    p = subparsers.add_parser("finetune", help="train a task ControlNet on a frozen base model")
    p.add_argument("--task", required=True, choices=("superres", "lesion"), help="the ControlNet's condition")
    p.add_argument("--base", required=True, help="the frozen base model: catalogue name or card path")
    _add_shared(p)
    p.set_defaults(run=lambda args, progress: _run(args, progress, args.task))

    regions_cut.add_command(subparsers)
    recipe.add_command(subparsers)
