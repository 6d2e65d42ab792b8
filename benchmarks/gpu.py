"""Whole-task GPU timings at the paper's model size: a 512x512x300 denoise and a 256^3 synthesis.

The paper publishes no weights, so the network is the paper preset (base 32 channels, 128^3 windows,
about 13 M parameters) with random weights, saved as a model card in a temporary folder: the time of
a run does not depend on the weights' values. Each task runs in this process through its `run()`,
exactly as `meddifffm denoise|synthesize` would, with `--device cuda`:

- denoise: a chest phantom resampled to 512 x 512 x 300 voxels of 0.8 x 0.8 x 1.0 mm (a typical chest
  CT matrix) with low-dose noise, stored as int16 NIfTI; the card's working spacing is 1 mm isotropic,
  so the task works on the CT's own grid (within 30 %), the task's default DiffPIR steps (one) from
  the timestep of a 20 HU noise level;
- synthesis: 256^3 voxels at 1 mm, 50 DDIM steps (the task's default).

For each precision asked for it reports the whole run's seconds (reading, sampling, writing), the
seconds of the first sampling step (cuDNN's algorithm search and allocations) and of the others, the
windows per step and per call, and CUDA's peak allocated memory. Prints one JSON document.

    .venv/bin/python benchmarks/gpu.py                          # on a CUDA machine: fp32 and bf16
    .venv/bin/python benchmarks/gpu.py --precisions bf16 --synthesis-steps 20
    .venv/bin/python benchmarks/gpu.py --dry-run                # tiny model, small volumes, CPU: checks the script

For comparison (issue 6): MAISI needs about 600 s for a 512^3 volume with 1000 DDPM steps, and 49 s
with 30 rectified-flow steps, on an A100.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedDiffFMLogic import ctio  # noqa: E402
from MedDiffFMLogic.modelfiles import save_model  # noqa: E402
from MedDiffFMLogic.network import PRESETS, MedDiffFMNet  # noqa: E402
from MedDiffFMLogic.progress import Progress  # noqa: E402
from MedDiffFMLogic.sampling import WindowConfig  # noqa: E402
from MedDiffFMLogic.tasks import denoise, synthesize  # noqa: E402

# (x, y, z) voxels, spacing in mm
FULL = {"preset": "paper", "ct": ((512, 512, 300), (0.8, 0.8, 1.0)), "synthesis": ((256, 256, 256), (1.0, 1.0, 1.0))}
DRY = {"preset": "tiny", "ct": ((64, 64, 40), (3.2, 3.2, 4.0)), "synthesis": ((48, 48, 48), (4.0, 4.0, 4.0))}


class StepClock(Progress):
    """Records when each step of each stage ends (the tasks report every sampling step)."""

    def __init__(self):
        super().__init__("none")
        self.marks: dict[str, list[float]] = {}

    def start(self, stage: str, total: int, message: str = "") -> None:
        super().start(stage, total, message)
        self.marks[stage] = [time.perf_counter()]

    def step(self, step: int, message: str = "") -> None:
        self.marks.setdefault(self._stage, []).append(time.perf_counter())

    def summary(self, stage: str) -> dict:
        marks = self.marks.get(stage, [])
        steps = [b - a for a, b in zip(marks, marks[1:])]
        if not steps:
            return {"steps": 0}
        rest = steps[1:]
        return {"steps": len(steps), "first_step_s": round(steps[0], 2),
                "other_steps_mean_s": round(sum(rest) / len(rest), 3) if rest else None,
                "sampling_s": round(sum(steps), 1)}


def random_model_card(preset: str, spacing_mm: float, folder: Path) -> Path:
    """The preset's network with small random weights (its output layers start at zero, which would make
    every estimate zero and could let a kernel take shortcuts) as a model card."""
    torch.manual_seed(0)
    config = PRESETS[preset]
    net = MedDiffFMNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    return save_model(net, folder, name=f"{preset}-random", kind="base", architecture=config.to_dict(),
                      working_spacing=(spacing_mm,) * 3,
                      description=f"{preset} preset with random weights, for timing only")


def phantom_ct(size_xyz, spacing, path: Path, coarse=(96, 96, 64), seed: int = 10002) -> Path:
    """A quarter-dose chest phantom, simulated on `coarse` voxels over the same field of view (cheap)
    and resampled onto size_xyz voxels of `spacing`, as int16 NIfTI."""
    import SimpleITK as sitk

    from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom, simulate_low_dose

    extent = [n * s for n, s in zip(size_xyz, spacing)]
    phantom = make_phantom(PhantomConfig(region="chest", size=tuple(coarse),
                                         spacing=tuple(e / n for e, n in zip(extent, coarse)), seed=seed))
    noisy = simulate_low_dose(phantom.image, 0.25, seed=seed)
    grid = sitk.Image([int(n) for n in size_xyz], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetOrigin([-(e - s) / 2 for e, s in zip(extent, spacing)])
    ctio.write_image(sitk.Cast(ctio.resample_onto(noisy, grid, "linear", -1000.0), sitk.sitkInt16), path)
    return path


def timed_run(fn, clock: StepClock, stage: str, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    result = {"seconds": round(time.perf_counter() - start, 1), **clock.summary(stage)}
    if device.type == "cuda":
        result["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--denoise-steps", type=int, default=denoise.DenoiseConfig.steps)
    p.add_argument("--synthesis-steps", type=int, default=synthesize.SynthesizeConfig.steps)
    p.add_argument("--tasks", nargs="+", default=["denoise", "synthesize"], choices=["denoise", "synthesize"])
    p.add_argument("--skip-air", action="store_true", help="also time denoise with --skip-air")
    p.add_argument("--window-batch", type=int, default=None, help="windows per call (default: the engine's auto)")
    p.add_argument("--dry-run", action="store_true", help="tiny model, small volumes, on the CPU: checks the script")
    args = p.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    device_name = "cpu" if args.dry_run else "cuda"
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device; use --dry-run to check the script on a CPU")
    report = {
        "benchmark": "whole tasks at the paper's model size (random weights)",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "preset": sizes["preset"],
        "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ct_size, ct_spacing = sizes["ct"]
        card = random_model_card(sizes["preset"], max(ct_spacing), folder / "model")
        coarse = tuple(min(n, c) for n, c in zip(ct_size, (96, 96, 64)))
        ct = phantom_ct(ct_size, ct_spacing, folder / "ct.nii.gz", coarse) if "denoise" in args.tasks else None
        synth_size, synth_spacing = sizes["synthesis"]
        for precision in args.precisions:
            windows = WindowConfig(batch=args.window_batch, precision=precision)
            for skip_air in ((False, True) if args.skip_air else (False,)) if "denoise" in args.tasks else ():
                clock = StepClock()
                config = denoise.DenoiseConfig(noise_level=20.0, steps=args.denoise_steps, model=str(card),
                                               skip_air=skip_air, windows=windows, device=device_name)
                out = timed_run(lambda: denoise.run(config, ct, folder / "denoised.nii.gz", progress=clock),
                                clock, "denoise", device)
                report["runs"].append({"task": "denoise", "precision": precision, "skip_air": skip_air,
                                       "size_xyz": list(ct_size), "spacing_mm": list(ct_spacing), **out})
                print(json.dumps(report["runs"][-1]), file=sys.stderr)
            if "synthesize" in args.tasks:
                clock = StepClock()
                config = synthesize.SynthesizeConfig(size=synth_size, spacing=synth_spacing, model=str(card),
                                                     steps=args.synthesis_steps, windows=windows, device=device_name)
                out = timed_run(lambda: synthesize.run(config, folder / "synthetic.nii.gz", progress=clock),
                                clock, "synthesize", device)
                report["runs"].append({"task": "synthesize", "precision": precision, "size_xyz": list(synth_size),
                                       "spacing_mm": list(synth_spacing), **out})
                print(json.dumps(report["runs"][-1]), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
