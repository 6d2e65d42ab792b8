"""The demo: a chest phantom with a lesion, its simulated low-dose scan, and a short whole-volume
sampling run with a tiny model fitted to the phantom on the spot.

Until the bundled models exist (training issue) the demo fits its own tiny model for a few
minutes at most; its card says what it is. The tasks issue replaces this with every task.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..device import resolve_device
from ..errors import InputError
from ..modelfiles import save_model
from ..network import TINY, MedDiffFMNet, whole_volume_axes, coordinate_grid
from ..phantoms import PhantomConfig, make_phantom, simulate_low_dose
from ..progress import SILENT, Progress
from ..regions import region_index
from ..schedules import make_ddpm
from ..training.objective import Batch, diffusion_loss
from . import synthesize

DEMO_SPACING = (4.0, 4.0, 4.0)  # coarse, so that the tiny model's 32^3 window sees a whole chest


@dataclass(frozen=True)
class DemoConfig:
    train_steps: int = 150
    steps: int = 20
    seed: int = 0
    device: str = "auto"
    dose: float = 0.25


def run(config: DemoConfig, output: str | os.PathLike, progress: Progress = SILENT) -> dict[str, str]:
    if config.train_steps < 1 or config.steps < 1:
        raise InputError("--train-steps and --steps must be at least 1")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress.start("phantom", 2, "chest phantom with a lesion")
    phantom = make_phantom(PhantomConfig(region="chest", lesions=1, seed=config.seed))
    outputs = {
        "ct": ctio.write_image(phantom.image, out / "ct.nii.gz"),
        "labels": ctio.write_image(phantom.labels, out / "labels.nii.gz"),
        "lesion_mask": ctio.write_image(phantom.lesion_mask, out / "lesion_mask.nii.gz"),
    }
    progress.step(1, "low-dose simulation")
    low_dose = simulate_low_dose(phantom.image, config.dose, seed=config.seed)
    outputs["ct_low_dose"] = ctio.write_image(low_dose, out / "ct_low_dose.nii.gz")
    progress.step(2)

    model_card = _fit_tiny_model(phantom, config, out / "model", progress)
    outputs["model"] = model_card
    synth = synthesize.run(
        synthesize.SynthesizeConfig(
            region="chest", anatomy=str(outputs["labels"]), model=str(model_card),
            steps=config.steps, seed=config.seed, device=config.device,
        ),
        out / "synthesized.nii.gz", progress,
    )
    outputs["synthesized"] = Path(synth["image"])
    outputs["montage"] = _montage(out / "montage.png", phantom, low_dose, ctio.read_ct(synth["image"]))
    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        "low_dose_noise_hu": round(float(np.std(ctio.to_array(low_dose) - ctio.to_array(phantom.image))), 1),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "note": "tiny demonstration model fitted to one phantom; not for clinical use",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    outputs["summary"] = out / "summary.json"
    return {k: str(v) for k, v in outputs.items()}


def _fit_tiny_model(phantom, config: DemoConfig, folder: Path, progress: Progress) -> Path:
    """Fit the tiny model to the phantom at 4 mm: native 32^3 crops and the whole volume resized to
    32^3, each with its whole-volume coordinates (a miniature of the paper's multi-level inputs)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    image = ctio.resample_to_spacing(phantom.image, DEMO_SPACING)
    labels = ctio.resample_onto(phantom.labels, image, "nearest", 0)
    volume = torch.from_numpy(ctio.window_to_unit(image, "chest"))
    anatomy = torch.from_numpy(sitk.GetArrayFromImage(labels).astype(np.int64))
    coords = coordinate_grid(whole_volume_axes(volume.shape))[0]
    edge = TINY.window_size
    whole = Batch(
        image=torch.nn.functional.interpolate(volume[None, None], size=(edge,) * 3, mode="trilinear"),
        region=torch.tensor([region_index("chest")]),
        anatomy=torch.nn.functional.interpolate(anatomy[None, None].float(), size=(edge,) * 3, mode="nearest")[0].long(),
        coords=torch.nn.functional.interpolate(coords[None], size=(edge,) * 3, mode="trilinear", align_corners=True),
    )
    net = MedDiffFMNet(TINY).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = make_ddpm()
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    losses = []
    progress.start("fit demo model", config.train_steps)
    for step in range(config.train_steps):
        if step % 2 == 0:
            batch = whole
        else:
            z, y, x = (int(rng.integers(0, max(n - edge, 0) + 1)) for n in volume.shape)
            box = (slice(z, z + edge), slice(y, y + edge), slice(x, x + edge))
            batch = Batch(volume[box][None, None], torch.tensor([region_index("chest")]),
                          anatomy[box][None], coords[(slice(None), *box)][None])
        loss = diffusion_loss(net, scheduler, batch.to(device), generator, condition_dropout=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.step(step + 1, f"loss {np.mean(losses[-10:]):.3f}")
    return save_model(
        net, folder, name="demo-tiny", kind="base", architecture=TINY.to_dict(),
        working_spacing=DEMO_SPACING,
        description="Tiny model fitted by `meddifffm demo` to one procedural chest phantom.",
        provenance={
            "trained_on": "one procedural chest phantom (MedDiffFMLogic.phantoms), seed %d" % config.seed,
            "steps": config.train_steps, "optimizer": "Adam 1e-3", "batch": 1,
            "command": f"meddifffm demo --train-steps {config.train_steps} --seed {config.seed}",
            "final_loss_mean_last_10": round(float(np.mean(losses[-10:])), 4),
        },
    )


def _montage(path: Path, phantom, low_dose: sitk.Image, synthesized: sitk.Image) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = sitk.GetArrayViewFromImage(phantom.lesion_mask)
    z = int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else mask.shape[0] // 2
    synthesized = ctio.resample_onto(synthesized, phantom.image, "linear")
    panels = [("phantom", phantom.image), ("low dose", low_dose), ("synthesized (tiny model)", synthesized)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(sitk.GetArrayViewFromImage(image)[z], cmap="gray", vmin=-1000, vmax=400)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def add_command(subparsers) -> None:
    from ..cli_args import add_common

    p = subparsers.add_parser("demo", help="make a phantom, simulate a low-dose scan and run a short sampling run")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--train-steps", type=int, default=DemoConfig.train_steps, help="training steps of the demo's tiny model")
    p.add_argument("--steps", type=int, default=DemoConfig.steps, help="sampling steps")
    add_common(p)
    p.set_defaults(run=lambda args, progress: run(
        DemoConfig(train_steps=args.train_steps, steps=args.steps, seed=args.seed, device=args.device),
        args.output, progress,
    ))
