"""Training throughput on the CPU: the earlier training step against today's, side by side in one run.

Every variant is a real `Trainer` (data preparation, forward, backward, gradient clipping, Adam and the
EMA update, as in training) on the same procedural phantom set, with the demonstration base model's
setting: the SMALL network with 32^3 windows at 4 mm, a batch of four windows, the paper's multi-level
sampling. The variants take turns, a few steps each, round after round, so that the load of a shared
machine falls on all of them alike; each turn's first step is not timed (it may use batches a data
worker prepared during another variant's turn).

  old       the step as it was: 1 torch thread, contiguous layout, eager, samples built in the step
  new       the default now: one thread per core, channels-last-3d weights, one data worker building
            samples, noise and condition dropout ahead of the step, precision by what the CPU computes
            (device.training_precision; fp32 without AVX512-BF16/AMX), and torch.compile with --compile
  levers    with --levers: each lever alone on top of `old` (threads, channels_last, worker, compile,
            bf16: autocast forced on, whatever the CPU), and `new-worker`, the new step without its data
            worker (on two cores the worker competes with the two compute threads), to keep what wins
            and record what lost

Figures: samples per second (wall clock) and the main process's CPU seconds per step (less sensitive to
other processes on a shared machine, blind to the second thread and the worker), median over the
timed steps; the load average before and after. Prints one JSON document and writes it to
benchmarks/results/train_speed.json (--out to change; --quick: a check that everything runs).

    .venv/bin/python benchmarks/train_speed.py                       # old vs new, about 3 minutes idle
    .venv/bin/python benchmarks/train_speed.py --compile --levers    # and every lever alone
    .venv/bin/python benchmarks/train_speed.py --curves 60 --network tiny   # bf16's loss curve against fp32's

--curves N trains fp32 (the old step) and forced bf16 autocast from the same seed for N steps each,
turn by turn, and reports both loss series, their largest and mean difference and each one's
validation loss (EMA weights) at the end: reduced precision must follow the fp32 curve.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedDiffFMLogic.device import cpu_bf16_native  # noqa: E402
from MedDiffFMLogic.network import PRESETS  # noqa: E402
from MedDiffFMLogic.training.commands import CONFIG_DIR  # noqa: E402
from MedDiffFMLogic.training.config import load_config  # noqa: E402
from MedDiffFMLogic.training.trainer import Trainer  # noqa: E402

CORES = os.cpu_count() or 1
# The earlier step: what demo-base.json ran with before the speed work.
OLD = dict(threads=1, channels_last=False, compile=False, num_workers=0, mixed_precision="no")
LEVERS = {
    "threads": dict(threads=CORES),
    "channels_last": dict(channels_last=True),
    "worker": dict(num_workers=1),
    "compile": dict(compile=True),
    "bf16": dict(),  # autocast forced on below
}


def new_settings(compile_: bool) -> dict:
    return dict(threads=CORES, channels_last=True, compile=compile_, num_workers=1, mixed_precision="auto")


def base_config(args):
    """demo-base.json with a small phantom set (one volume per region and seed)."""
    config = load_config(CONFIG_DIR / "demo-base.json")
    phantoms = dataclasses.replace(config.data.phantoms, seeds=(0, args.volumes), val_seeds=(9000, 9001))
    if args.phantom_size:
        phantoms = dataclasses.replace(phantoms, size=tuple(int(n) for n in args.phantom_size.split(",")))
    data = dataclasses.replace(config.data, phantoms=phantoms, cache_dir=str(args.cache))
    network = dataclasses.replace(PRESETS[args.network], window_size=args.window)
    return dataclasses.replace(
        config, data=data, network=network, batch_size=args.batch, accumulation=1, steps=10**6,
        sample_every=0, validate_every=10**6, checkpoint_every=10**6, checkpoint_minutes=0, deterministic=True,
    )


class Variant:
    def __init__(self, name: str, config, folder: Path, force_bf16: bool = False):
        self.name, self.config = name, config
        self.trainer = Trainer(config, folder / name, device="cpu").setup()
        if force_bf16:
            self.trainer.amp_dtype, self.trainer.precision_reason = torch.bfloat16, "bf16 autocast (forced)"
        self.loaded = self.trainer._loader()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.losses: list[float] = []
        self.first_step_seconds = None

    def steps(self, n: int, timed_from: int = 1) -> None:
        torch.set_num_threads(self.config.threads or CORES)
        for i in range(n):
            wall, cpu = time.perf_counter(), time.process_time()
            loss, _ = self.trainer.train_step(self.loaded)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            self.losses.append(loss)
            if self.first_step_seconds is None:
                self.first_step_seconds = round(wall, 1)  # includes compiling, when compiled
            elif i >= timed_from:
                self.wall.append(wall)
                self.cpu.append(cpu)

    def report(self) -> dict:
        batch = self.config.batch_size * self.config.accumulation
        wall = statistics.median(self.wall) if self.wall else float("nan")
        return {
            "settings": self.trainer.speed_settings(),
            "timed_steps": len(self.wall),
            "seconds_per_step_median": round(wall, 3),
            "seconds_per_step_all": [round(w, 2) for w in self.wall],
            "samples_per_second": round(batch / wall, 3),
            "main_process_cpu_seconds_per_step_median": round(statistics.median(self.cpu), 3) if self.cpu else None,
            "first_step_seconds": self.first_step_seconds,
            "losses_first_steps": [round(x, 4) for x in self.losses[:4]],
        }


def main(argv=None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's notes on deterministic kernels
        return _main(argv)


def _main(argv) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="turns per variant (default 6)")
    p.add_argument("--steps-per-turn", type=int, default=4, help="steps per turn, the first untimed (default 4)")
    p.add_argument("--compile", action="store_true", help="torch.compile the new step (compiling takes minutes)")
    p.add_argument("--levers", action="store_true", help="also each lever alone on top of the old step")
    p.add_argument("--batch", type=int, default=4, help="windows per step (default 4)")
    p.add_argument("--window", type=int, default=32, help="window edge in voxels (default 32)")
    p.add_argument("--network", choices=sorted(PRESETS), default="small", help="network preset (default small)")
    p.add_argument("--curves", type=int, default=0, metavar="N",
                   help="instead of speed: N steps of fp32 and of forced bf16, their loss curves compared")
    p.add_argument("--volumes", type=int, default=2, help="phantoms per region (default 2)")
    p.add_argument("--phantom-size", metavar="X,Y,Z", help="phantom voxels (default demo-base's 96,96,64 at 2x2x2.5 mm)")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "train-speed-cache",
                   help="phantoms and preprocessed volumes (kept for the next run)")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/train_speed.json, "
                   "with --curves train_speed_curves.json)")
    p.add_argument("--quick", action="store_true", help="a check that everything runs: 1 round of 2 steps, no output file")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / ("train_speed_curves.json" if args.curves else "train_speed.json")
    if args.quick:
        args.rounds, args.steps_per_turn, args.out = 1, 2, None
    started = time.perf_counter()
    load_before = os.getloadavg()
    config = base_config(args)
    plan = {"old": OLD, "new": new_settings(args.compile)}
    if args.curves:
        plan = {"old": OLD, "old+bf16": OLD}
        args.rounds, args.steps_per_turn = -(-args.curves // 10), 10
    elif args.levers:
        plan.update({f"old+{k}": {**OLD, **v} for k, v in LEVERS.items()})
        plan["new-worker"] = {**new_settings(args.compile), "num_workers": 0}  # the worker's share on few cores
    folder = Path(tempfile.mkdtemp(prefix="train-speed-"))
    try:
        variants = [Variant(name, dataclasses.replace(config, **settings), folder, force_bf16=name == "old+bf16")
                    for name, settings in plan.items()]
        for v in variants:  # the first step (compiling, oneDNN's kernel choice) is timed apart
            v.steps(1)
        for _ in range(args.rounds):
            for v in variants:
                v.steps(args.steps_per_turn)
        validation = {v.name: v.trainer.validation_loss() for v in variants} if args.curves else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reports = {v.name: v.report() for v in variants}
    old = reports["old"]["samples_per_second"]
    result = {
        "what": "training samples per second, SMALL network, demo-base setting, old and new steps side by side",
        "command": "python benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setting": {"network": args.network, "window": args.window, "batch": args.batch, "spacing_mm": 4.0,
                    "phantoms_per_region": args.volumes, "rounds": args.rounds, "steps_per_turn": args.steps_per_turn},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": CORES,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_in_hardware": cpu_bf16_native(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "variants": reports,
        "speedup_over_old": {k: round(r["samples_per_second"] / old, 2) for k, r in reports.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if args.curves:
        a, b = (v.losses[: args.curves] for v in variants)
        diff = [abs(x - y) for x, y in zip(a, b)]
        result["curves"] = {
            "steps": args.curves, "fp32_losses": [round(x, 5) for x in a], "bf16_losses": [round(x, 5) for x in b],
            "largest_difference": round(max(diff), 5), "mean_difference": round(sum(diff) / len(diff), 5),
            "mean_loss_last_20": {"fp32": round(sum(a[-20:]) / len(a[-20:]), 5),
                                  "bf16": round(sum(b[-20:]) / len(b[-20:]), 5)},
            "validation_loss_ema_at_end": {"fp32": round(validation["old"], 5),
                                           "bf16": round(validation["old+bf16"], 5)},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
