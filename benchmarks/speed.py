"""Speed and memory of whole-volume sampling: ours against the straightforward MONAI baseline.

Both run in this process with the same network weights, windows, overlap, timesteps, initial noise
and seed. Per volume size:

- ours: `sampling.SlidingWindowEstimator` + `sampling.sample` (the path every task takes);
- baseline: at every step `monai.inferers.sliding_window_inference(mode="gaussian")` over the UNet
  (the position channels travel as extra input channels, cropped by MONAI), then
  `DDIMScheduler.step`. The UNet is run as MONAI builds it by default (its own attention, MONAI's
  default `sw_batch_size=1`); `--baseline-as-ours` gives it our batch and fused attention instead, so
  that the sampler alone is compared.

Timesteps form an arithmetic sequence (t0, t0 - k, ..., 0) that MONAI's `DDIMScheduler.step` steps
exactly (it assumes the previous timestep is t - T // n), and both run without x0 clipping, so the two
compute the same DDIM update and their outputs agree to float rounding plus the small difference of
the two Gaussian weight maps (MONAI floors its map at 1e-3, ours at 1e-4). The JSON reports the
largest difference of the final samples.

Peak memory is the VmHWM growth of one child process per (method, size), on Linux. Prints one JSON
document; nothing here is a test.

`--tasks` adds a "tasks" section: each task's own `run()` on a phantom, with our sliding-window
estimator and with MONAI's `sliding_window_inference` in its place (the tasks' DiffPIR and RePaint
loops are ours in both: MONAI has none), each in a child process that reports seconds, voxel-steps
and peak memory; the outputs and the first noise estimates of the two are compared. How, and what the
figures mean: `speed_tasks.py`.

    .venv/bin/python benchmarks/speed.py                      # 64^3 .. 256x256x128, ours and baseline
    .venv/bin/python benchmarks/speed.py --full               # adds 512x512x300 (ours only: memory)
    .venv/bin/python benchmarks/speed.py --memory-curve       # peak memory against volume size
    .venv/bin/python benchmarks/speed.py --sizes --denoise-memory 256,256,128 512,512,300
                                  # peak memory of whole `meddifffm denoise` runs (one DiffPIR step)
    .venv/bin/python benchmarks/speed.py --sizes --threads 1 --tasks      # every task, 64^3 and 128x128x64
    .venv/bin/python benchmarks/speed.py --sizes --tasks denoise lesion --task-sizes 256,256,128
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import peakmem  # noqa: E402  (benchmarks/, the script's folder)
from peakmem import PeakGrowth  # noqa: E402
import speed_tasks  # noqa: E402
from MedDiffFMLogic.network import PRESETS, MedDiffFMNet, coordinate_grid, whole_volume_axes  # noqa: E402
from MedDiffFMLogic.sampling import (  # noqa: E402
    Conditions, SlidingWindowEstimator, WindowConfig, auto_window_batch, make_generator, sample,
)
from MedDiffFMLogic.schedules import PAPER_SCHEDULE, alphas_cumprod, make_ddim  # noqa: E402

DEFAULT_SIZES = ("64,64,64", "128,128,64", "256,256,128")
FULL_SIZE = "512,512,300"
REGION = 1  # chest


def build_net(args, fused_attention: bool) -> MedDiffFMNet:
    """The benchmark's network: a bundled or given model card, else a preset with random weights (the
    output layers are zero at initialisation, which would make every estimate zero)."""
    if args.model:
        from MedDiffFMLogic.modelfiles import load_network

        net, _ = load_network(args.model)
        if not fused_attention:
            plain = MedDiffFMNet(net.config, fused_attention=False)
            plain.load_state_dict(net.state_dict())
            net = plain
        return net.eval()
    torch.manual_seed(0)
    net = MedDiffFMNet(PRESETS[args.preset], fused_attention=fused_attention).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    return net


def timesteps_for(steps: int) -> list[int]:
    """An arithmetic sequence ending at 0 that MONAI's DDIM step follows exactly."""
    stride = PAPER_SCHEDULE.num_train_timesteps // max(steps, 1)
    return [stride * k for k in range(steps - 1, -1, -1)]


def run_ours(net, shape, args, x) -> torch.Tensor:
    windows = WindowConfig(size=args.window, overlap=args.overlap, batch=args.batch)
    estimator = SlidingWindowEstimator(net, shape, Conditions(region=REGION), windows)
    return sample(estimator, alphas_cumprod(), x.clone(), timesteps_for(args.steps), eta=0.0, clip=False)


def run_baseline(net, shape, args, x, sw_batch: int) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    window = args.window or net.config.window_size
    roi = tuple(min(window, math.ceil(n / net.config.size_divisor) * net.config.size_divisor) for n in shape)
    scheduler = make_ddim()
    scheduler.clip_sample = False
    steps = timesteps_for(args.steps)
    scheduler.num_inference_steps = len(steps)
    scheduler.timesteps = torch.tensor(steps)
    coords = coordinate_grid(whole_volume_axes(shape))  # (1, 3, D, H, W): cropped with x by MONAI

    def predictor(window_input, t):
        return net(window_input[:, :1], torch.full((window_input.shape[0],), t), region=REGION,
                   coords=window_input[:, 1:])

    sample_ = x.clone()
    with torch.inference_mode():
        for t in steps:
            eps = sliding_window_inference(
                torch.cat([sample_, coords], dim=1), roi, sw_batch, predictor, overlap=args.overlap,
                mode="gaussian", sigma_scale=0.125, padding_mode="replicate", t=t,
            )
            sample_, _ = scheduler.step(eps, t, sample_)
    return sample_


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure_speed(args, shape) -> dict:
    torch.set_num_threads(args.threads)
    ours_net = build_net(args, fused_attention=True)
    base_net = ours_net if args.baseline_as_ours else build_net(args, fused_attention=False)
    x = torch.randn((1, 1, *shape), generator=make_generator(args.seed))
    voxel_steps = math.prod(shape) * args.steps
    window = args.window or ours_net.config.window_size
    batch = args.batch or auto_window_batch(ours_net.config.channels[0], (window,) * 3)
    result = {"shape_zyx": list(shape), "steps": args.steps, "window": window, "window_batch": batch}
    # Warm-up outside the timing (oneDNN primitive creation, allocator), one window each way.
    warm = tuple(min(n, window) for n in shape)
    run_ours(ours_net, warm, argparse.Namespace(**{**vars(args), "steps": 1}), x[..., : warm[0], : warm[1], : warm[2]])
    ours, seconds = timed(lambda: run_ours(ours_net, shape, args, x))
    result["ours"] = {"seconds": round(seconds, 2), "voxel_steps_per_s": round(voxel_steps / seconds)}
    if not args.ours_only:
        sw_batch = batch if args.baseline_as_ours else 1
        baseline, seconds = timed(lambda: run_baseline(base_net, shape, args, x, sw_batch))
        result["baseline"] = {"seconds": round(seconds, 2), "voxel_steps_per_s": round(voxel_steps / seconds),
                              "sw_batch_size": sw_batch, "fused_attention": args.baseline_as_ours}
        result["speedup"] = round(result["ours"]["voxel_steps_per_s"] / result["baseline"]["voxel_steps_per_s"], 2)
        diff = (ours - baseline).abs()
        result["max_abs_difference"] = float(diff.max())
        result["mean_abs_difference"] = float(diff.mean())
        result["output_scale"] = float(ours.abs().max())
    return result


# ------------------------------------------------------------------------------------------- memory

MEMORY_CHILD = "--memory-child"


def memory_child(args) -> None:
    """Runs in a child process: peak RSS growth (MiB) of one sampling run of one method and size."""
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.size.split(","))
    net = build_net(args, fused_attention=args.method == "ours")
    warm = (net.config.window_size,) * 3
    run_ours(net, warm, argparse.Namespace(**{**vars(args), "steps": 1}), torch.zeros((1, 1, *warm)))

    with PeakGrowth() as peak:  # the initial noise counts, as the sampler's own volumes do
        x = torch.randn((1, 1, *shape), generator=make_generator(args.seed))
        start = time.perf_counter()
        if args.method == "ours":
            run_ours(net, shape, args, x)
        else:
            run_baseline(net, shape, args, x, 1)
    print(json.dumps({"peak_growth_mib": peak.mib, "seconds": round(time.perf_counter() - start, 1)}))


def measure_memory(args, shape, method: str) -> dict:
    if not peakmem.supported():
        return {"skipped": "peak memory is read from /proc (Linux only)"}
    command = [sys.executable, __file__, MEMORY_CHILD, "--method", method, "--size", ",".join(map(str, shape)),
               "--steps", str(args.steps), "--threads", str(args.threads), "--overlap", str(args.overlap),
               "--seed", str(args.seed), "--preset", args.preset]
    for flag, value in (("--model", args.model), ("--window", args.window), ("--batch", args.batch)):
        if value:
            command += [flag, str(value)]
    measured = peakmem.run_child(command)
    if "failed" in measured:
        return measured
    volume_mib = math.prod(shape) * 4 / 2**20
    measured["volume_mib"] = round(volume_mib, 1)
    measured["peak_in_volumes"] = round(measured["peak_growth_mib"] / volume_mib, 2)
    return measured


def denoise_memory(args, size_xyz: tuple[int, int, int], folder: Path) -> dict:
    """Peak resident memory of a whole `meddifffm denoise` process (one DiffPIR step, given noise level)
    on a chest phantom resampled to `size_xyz` voxels over a 358 x 358 x 300 mm field of view."""
    import resource

    from gpu import phantom_ct

    extent = (358.0, 358.0, 300.0)
    source = phantom_ct(size_xyz, [e / n for e, n in zip(extent, size_xyz)],
                        folder / f"ct_{'x'.join(map(str, size_xyz))}.nii", coarse=(128, 128, 96), seed=10001)
    command = [sys.executable, "-m", "MedDiffFMLogic", "denoise", str(source), "-o", str(folder / "out.nii"),
               "--steps", "1", "--noise-level", "20", "--progress", "none"]
    if args.model:
        command += ["--model", args.model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        return {"size_xyz": list(size_xyz), "failed": (out.stderr.strip().splitlines() or ["?"])[-1]}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; the largest child so far
    volume_mib = math.prod(size_xyz) * 4 / 2**20
    return {"size_xyz": list(size_xyz), "seconds_one_step": round(seconds, 1),
            "peak_rss_mib": round(peak / 1024), "grew": peak > before,
            "volume_float32_mib": round(volume_mib), "peak_in_volumes": round(peak / 1024 / volume_mib, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="*", default=list(DEFAULT_SIZES), help="volumes X,Y,Z (voxels)")
    p.add_argument("--full", action="store_true", help=f"also {FULL_SIZE} (ours only, for memory)")
    p.add_argument("--memory-curve", action="store_true", help="peak memory of ours over growing volumes")
    p.add_argument("--model", help="a model card (default: a preset with random weights)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=2, help="sampling steps per run (default 2)")
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=None, help="our windows per call (default: auto)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-as-ours", action="store_true",
                   help="give the baseline our window batch and fused attention (compares the samplers alone)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    p.add_argument("--ours-only", action="store_true")
    p.add_argument("--denoise-memory", nargs="*", default=[], metavar="X,Y,Z",
                   help="peak memory of whole denoise runs at these sizes (ascending)")
    p.add_argument("--tasks", nargs="*", choices=speed_tasks.TASKS, default=None,
                   help="also each task's run(), ours and with MONAI's sliding window (no names: all)")
    p.add_argument("--task-sizes", nargs="*", default=list(speed_tasks.DEFAULT_TASK_SIZES), metavar="X,Y,Z",
                   help="working-grid volumes of the task runs (default 64,64,64 128,128,64)")
    p.add_argument(MEMORY_CHILD, action="store_true", help=argparse.SUPPRESS)
    p.add_argument(speed_tasks.TASK_CHILD, metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--method", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    if args.task_child:
        speed_tasks.task_child(args.task_child, args.method, args.threads, args.model or speed_tasks.DEFAULT_MODEL)
        return

    def zyx(text):
        x, y, z = (int(v) for v in text.split(","))
        return (z, y, x)

    report = {
        "benchmark": "whole-volume sampling: ours vs MONAI sliding_window_inference + DDIMScheduler.step",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
        "model": args.model or f"preset {args.preset} (random weights)",  # of the sampling-core runs
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": [],
    }
    for text in args.sizes:
        shape = zyx(text)
        run = measure_speed(args, shape)
        if not args.no_memory:
            run["peak_memory"] = {"ours": measure_memory(args, shape, "ours")}
            if not args.ours_only:
                run["peak_memory"]["baseline"] = measure_memory(args, shape, "baseline")
        report["runs"].append(run)
        print(json.dumps(run), file=sys.stderr)
    if args.full:
        shape = zyx(FULL_SIZE)
        report["full_size"] = {"shape_zyx": list(shape), "peak_memory": measure_memory(args, shape, "ours")}
    if args.memory_curve:
        curve = []
        for edge in (64, 96, 128, 160, 192, 256):
            shape = (edge // 2, edge, edge)
            curve.append({"shape_zyx": list(shape), **measure_memory(args, shape, "ours")})
        report["memory_curve"] = curve
    if args.denoise_memory:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            report["denoise_memory"] = [
                denoise_memory(args, tuple(int(v) for v in text.split(",")), Path(folder))
                for text in args.denoise_memory
            ]
    if not (args.sizes or args.full or args.memory_curve):
        del report["model"]  # no sampling-core run (the tasks section names its models)
    if args.tasks is not None:
        args.tasks = args.tasks or list(speed_tasks.TASKS)
        report["tasks"] = speed_tasks.measure_tasks(args, __file__, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
