"""Headless batch runs over a folder of scans through the Slicer module's logic (`process(...)`).

Slicer runs it through the module's Scripts/batch.py (its docstring gives the paths); the tests run
`main()` with a slicer-core scene. Each input is loaded into the scene, processed,
its results written to the output folder, and every node the case added is removed again, so a long
batch does not accumulate volumes in memory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

from . import bridge, jobs, runner
from .tasks import DEVICES, PRECISIONS, PRESETS, REGIONS, SKIP_AIR_TASKS, TASKS, TaskParameters

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batch.py", description="Run a MedDiffFM task over every scan in a folder (or one file).")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--input", help="a scan or a folder of scans (.nii.gz, .nrrd, .mha); not used by synthesize")
    p.add_argument("--output", required=True, help="folder for the results (created if missing)")
    p.add_argument("--masks", help="folder of masks named like the scans (inpaint, lesion; optional ROI for anomaly)")
    p.add_argument("--region", choices=REGIONS, default="chest")
    p.add_argument("--preset", choices=PRESETS, default="balanced")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--model", default="", help="model name or card path (default: the engine's)")
    p.add_argument("--steps", type=int, default=0, help="sampling steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network arithmetic: fp32, bf16 (about 2x faster on recent CPUs and GPUs, ~1%% error), fp16 (CUDA)")
    p.add_argument("--skip-air", action="store_true",
                   help=f"{', '.join(SKIP_AIR_TASKS)}: do not run the network on windows wholly outside the body")
    p.add_argument("--noise-level", type=float, default=0.0, help="denoise: noise in HU (default: estimated)")
    p.add_argument("--strength", type=float, default=1.0, help="denoise: multiplies the noise level")
    p.add_argument("--threshold", type=float, default=0.0, help="anomaly: HU threshold (default: the engine's)")
    p.add_argument("--factor", type=float, default=5.0, help="superres: thin slices per thick slice")
    p.add_argument("--spacing", type=float, default=0.0, help="superres: target slice spacing in mm")
    p.add_argument("--size", default="64,64,64", help="synthesize: voxels X,Y,Z")
    p.add_argument("--count", type=int, default=1, help="synthesize: how many volumes (seeds seed, seed+1, ...)")
    p.add_argument("--format", choices=("nii.gz", "nrrd"), default="nii.gz", help="file format of volume results")
    return p


def find_inputs(path: str) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise SystemExit(f"batch.py: error: --input {path} is neither a file nor a folder")
    found = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise SystemExit(f"batch.py: error: no scans ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return found


def _find_mask(masks: str, scan: Path) -> Path | None:
    stem = jobs._stem(scan)
    for ext in IMAGE_EXTENSIONS:
        candidate = Path(masks) / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _file_name(node, extension: str) -> str:
    name = node.GetName().replace(" ", "_")
    return f"{name}.seg.nrrd" if node.IsA("vtkMRMLSegmentationNode") else f"{name}.{extension}"


def parameters(args) -> TaskParameters:
    try:
        size = tuple(int(v) for v in args.size.replace("x", ",").split(","))
    except ValueError:
        raise SystemExit(f"batch.py: error: --size needs three integers X,Y,Z, not {args.size!r}") from None
    if len(size) != 3:
        raise SystemExit(f"batch.py: error: --size needs three integers X,Y,Z, not {args.size!r}")
    return TaskParameters(
        region=args.region, model=args.model, device=args.device, preset=args.preset, seed=args.seed,
        steps=args.steps, noise_level=args.noise_level, strength=args.strength, threshold=args.threshold,
        factor=args.factor, spacing=args.spacing, size=size, precision=args.precision, skip_air=args.skip_air,
    )


def main(argv: Sequence[str], processor, log: Callable[[str], None] = print) -> int:
    """Run the batch; `processor` is the Slicer module's MedDiffFMLogic (or MedDiffFMLib.jobs.Processor): anything with
    `.scene` and `.process(task, params, inputs, on_event=...)`. Returns the exit code: 0 when every
    case succeeded, 1 when any failed (the others still run)."""
    args = build_parser().parse_args(list(argv))
    info = TASKS[args.task]
    params = parameters(args)
    try:
        params.check(args.task)
    except ValueError as exc:
        raise SystemExit(f"batch.py: error: {exc}") from None
    if info.needs_volume and not args.input:
        raise SystemExit(f"batch.py: error: {args.task} needs --input")
    if info.segment == "mask" and not args.masks:
        raise SystemExit(f"batch.py: error: {args.task} needs --masks, a folder of masks named like the scans")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    scene = processor.scene
    cases = find_inputs(args.input) if info.needs_volume else [None] * max(1, args.count)
    failures = 0
    for index, scan in enumerate(cases):
        label = scan.name if scan is not None else f"volume {index + 1}/{len(cases)}"
        added: list = []
        started = time.monotonic()
        try:
            inputs = jobs.Inputs()
            case_params = params if scan is not None else params.with_(seed=params.seed + index)
            if scan is not None:
                inputs.volume = jobs.load_volume(scene, scan)
                added.append(inputs.volume)
                mask_path = _find_mask(args.masks, scan) if args.masks and info.segment else None
                if info.segment == "mask" and mask_path is None:
                    raise bridge.BridgeError(f"no mask named like {scan.name} in {args.masks}")
                if mask_path is not None:
                    labels = bridge.read_volume(mask_path, labelmap=True)
                    segmentation = bridge.add_to_scene(
                        scene, bridge.segmentation_from_labelmap(labels, inputs.volume, "mask"), "segmentation",
                        f"{inputs.volume.GetName()} mask", inputs.volume).node
                    added.append(segmentation)
                    inputs.segment = (segmentation, bridge.segment_ids(segmentation)[0])
            result = processor.process(args.task, case_params, inputs)
            added += result.nodes
            written = [jobs.save_node(node, output / _file_name(node, args.format)) for node in result.nodes]
            log(f"{label}: done in {time.monotonic() - started:.1f} s -> {', '.join(written)}")
        except (runner.EngineError, bridge.BridgeError) as exc:
            failures += 1
            log(f"{label}: FAILED: {exc}")
        finally:
            bridge.remove_nodes(scene, added)
    log(f"{len(cases) - failures} of {len(cases)} done" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0

