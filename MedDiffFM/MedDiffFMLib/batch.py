"""Headless batch runs over a folder of scans through the Slicer module's logic (`process(...)`).

Slicer runs it through the module's Scripts/batch.py (its docstring gives the paths); the tests run
`main()` with a slicer-core scene. Each input is loaded into the scene, processed,
its results written to the output folder, and every node the case added is removed again, so a long
batch does not accumulate volumes in memory.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Sequence

from . import bridge, jobs, runner
from .tasks import DEFAULT_PRESET, ENGINE_SETTINGS, PRESETS, TASKS, TaskParameters, engine_setting

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def build_parser() -> argparse.ArgumentParser:
    """The batch options; the task settings among them are the engine's declarations (default, type,
    choices, help), offered under the TaskParameters field's name."""
    p = argparse.ArgumentParser(
        prog="batch.py", description="Run a MedDiffFM task over every scan in a folder (or one file).")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--input", help="a scan or a folder of scans (.nii.gz, .nrrd, .mha); not used by synthesize")
    p.add_argument("--output", required=True, help="folder for the results (created if missing)")
    p.add_argument("--masks", help="folder of masks named like the scans (inpaint, lesion; optional ROI for anomaly)")
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                   help="speed against quality: sampling steps and window overlap (default %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="sampling steps (default: the preset's)")
    for name, (owners, _) in ENGINE_SETTINGS.items():
        setting = engine_setting(name)
        if len(owners) == 1:  # one task's setting: listed under that task
            setting = replace(setting, group=f"{owners[0]} settings", exclusive=None)
        elif len(owners) < len(TASKS):  # some tasks': say which
            setting = replace(setting, group=None, help=f"{', '.join(owners)}: {setting.help}")
        else:
            setting = replace(setting, group=None)
        replace(setting, flag="--" + name.replace("_", "-")).add_to(p, name)
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
    names = {f.name for f in fields(TaskParameters)}
    return TaskParameters(**{name: value for name, value in vars(args).items() if name in names})


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

