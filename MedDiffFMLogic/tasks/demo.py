"""The demo: a chest phantom with a lung nodule and its simulated quarter-dose scan, run through every
task with the bundled models; writes each task's output, a montage (input and output of each task on
one slice through the nodule) and summary.json (settings, timings and a few figures per task).

The scans: denoising and the anomaly map get the low-dose scan (what a patient's scan looks like);
inpainting (nodule removal), lesion generation (a nodule drawn at the mirror position in the other
lung), super-resolution (the phantom averaged into slabs `superres_factor` times thicker) and synthesis
(following the phantom's organ labels) start from the noise-free phantom, so the change is visible.

The phantom lies on the base model's working grid (at most DEMO_MAX_SIZE voxels over a DEMO_FOV_MM
field of view), so no task spends time resampling.

Fallback: when the bundled models are missing (a checkout before the training issue's models, or a
broken install), the demo fits a tiny model to the phantom on the spot (`train_steps` Adam steps at 4 mm)
and pairs it with untrained ControlNets (zero output convolutions: the base model alone). The summary
says so; lesion generation then behaves like inpainting and super-resolution rests on DiffPIR's data
step alone.
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
from scipy import ndimage

from .. import ctio
from ..anatomy import label_index
from ..controlnet import ControlNetConfig, MedDiffFMControlNet
from ..device import resolve_device
from ..errors import InputError, ModelFileError
from ..figures import pyplot, save_figure
from ..modelfiles import find_model, load_network, read_card, save_model
from ..network import TINY, MedDiffFMNet, coordinate_grid, whole_volume_axes
from ..phantoms import LESION_MODELS, PhantomConfig, make_phantom, simulate_low_dose
from ..progress import SILENT, Progress
from ..regions import region_index
from ..schedules import make_ddpm
from ..training.objective import Batch, diffusion_loss
from . import anomaly, denoise, inpaint, lesion, superres, synthesize
from .common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES

DEMO_SPACING = (4.0, 4.0, 4.0)  # the fallback model's grid: its 32^3 window then sees a whole chest
# Field of view and voxel cap: the phantom's patient is scaled to fit; at the bundled model's 4 mm this
# is 64 x 64 x 48 voxels, 18 windows of 32^3 per network pass: the whole demo took 5.5 minutes on the
# shared 2-core CPU with one torch thread (SMALL preset, 32^3 windows; steps 10/15/20/20/20/20).
DEMO_FOV_MM = (256.0, 256.0, 192.0)
DEMO_MAX_SIZE = (64, 64, 48)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    device: str = "auto"
    dose: float = 0.25
    denoise_steps: int = 10
    anomaly_steps: int = 20
    inpaint_steps: int = 20
    lesion_steps: int = 20
    superres_steps: int = 25
    superres_factor: int | None = None  # None: the factor the super-resolution ControlNet was trained for
    synthesize_steps: int = 25
    train_steps: int = 150  # fallback model only
    # torch CPU threads. One by default: the demo's small networks gain little from a second thread, and
    # on a busy 2-core machine two threads spin against other work (a demo with two threads was still
    # in super-resolution after 25 minutes where one thread finished everything in 5.5).
    threads: int | None = 1
    max_size: tuple[int, int, int] = DEMO_MAX_SIZE  # phantom voxels (x, y, z) at most


def run(config: DemoConfig, output: str | os.PathLike, progress: Progress = SILENT) -> dict[str, str]:
    for name in ("denoise_steps", "anomaly_steps", "inpaint_steps", "lesion_steps", "superres_steps",
                 "synthesize_steps", "train_steps"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if config.superres_factor is not None and config.superres_factor < 2:
        raise InputError("--superres-factor must be at least 2")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the demo's outputs")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    models = _bundled_models()
    fallback = models is None
    spacing = DEMO_SPACING if fallback else tuple(read_card(models["base"]).working_spacing)
    size = tuple(min(int(m), int(round(f / s))) for m, f, s in zip(config.max_size, DEMO_FOV_MM, spacing))

    progress.start("phantom", 2, "chest phantom with a lung nodule")
    clock = time.perf_counter()
    phantom = make_phantom(PhantomConfig(region="chest", size=size, spacing=spacing, lesions=1, seed=config.seed,
                                         lesion_radius_mm=(8.0, 12.0)))
    files = {
        "ct": ctio.write_image(phantom.image, out / "ct.nii.gz"),
        "labels": ctio.write_image(phantom.labels, out / "labels.nii.gz"),
        "lesion_mask": ctio.write_image(phantom.lesion_mask, out / "lesion_mask.nii.gz"),
    }
    progress.step(1, "low-dose simulation")
    low_dose = simulate_low_dose(phantom.image, config.dose, seed=config.seed)
    files["ct_low_dose"] = ctio.write_image(low_dose, out / "ct_low_dose.nii.gz")
    progress.step(2)
    timings["phantom"] = time.perf_counter() - clock
    if fallback:
        clock = time.perf_counter()
        models = _fallback_models(phantom, config, out / "model", progress)
        timings["fit fallback model"] = time.perf_counter() - clock

    clean, noisy = ctio.to_array(phantom.image), ctio.to_array(low_dose)
    nodule = sitk.GetArrayFromImage(phantom.lesion_mask).astype(bool)
    labels = sitk.GetArrayFromImage(phantom.labels)
    lungs = np.isin(labels, [label_index(n) for n in LESION_MODELS["chest"]["organs"]])
    body = labels > 0
    figures: dict[str, dict] = {}
    common = {"model": str(models["base"]), "seed": config.seed, "device": config.device}

    def timed(name, call):
        clock = time.perf_counter()
        result = call()
        timings[name] = time.perf_counter() - clock
        return result

    # Denoising: the low-dose scan.
    result = timed("denoise", lambda: denoise.run(
        denoise.DenoiseConfig(steps=config.denoise_steps, **common), files["ct_low_dose"], out / "denoised.nii.gz",
        progress))
    files["denoised"] = Path(result["image"])
    denoised = ctio.to_array(ctio.read_ct(files["denoised"]))
    figures["denoise"] = {
        "rmse_in_body_low_dose_hu": _rmse(noisy, clean, body), "rmse_in_body_denoised_hu": _rmse(denoised, clean, body),
    }

    # Anomaly map: the low-dose scan, restricted to the lungs (the nodule's host organ).
    roi_path = ctio.write_image(ctio.from_array(lungs.astype(np.uint8), phantom.image), out / "lungs.nii.gz")
    result = timed("anomaly", lambda: anomaly.run(
        anomaly.AnomalyConfig(steps=config.anomaly_steps, roi=str(roi_path), **common), files["ct_low_dose"],
        out / "anomaly_map.nii.gz", out / "anomaly_mask.nii.gz", out / "healthy.nii.gz", progress))
    files.update(anomaly_map=Path(result["map"]), anomaly_mask=Path(result["mask"]), healthy=Path(result["healthy"]))
    amap = ctio.to_array(ctio.read_ct(files["anomaly_map"]))
    amask = sitk.GetArrayFromImage(ctio.read_label_map(files["anomaly_mask"])).astype(bool)
    figures["anomaly"] = {
        "map_mean_in_nodule_hu": float(amap[nodule].mean()),
        "map_mean_in_rest_of_lungs_hu": float(amap[lungs & ~nodule].mean()),
        "dice_mask_vs_nodule": _dice(amask, nodule),
    }

    # Inpainting: remove the nodule (mask grown by one voxel, so its blurred rim goes too).
    grown = ndimage.binary_dilation(nodule, iterations=1)
    remove_path = ctio.write_image(ctio.from_array(grown.astype(np.uint8), phantom.image), out / "inpaint_mask.nii.gz")
    result = timed("inpaint", lambda: inpaint.run(
        inpaint.InpaintConfig(steps=config.inpaint_steps, **common), files["ct"], remove_path,
        out / "inpainted.nii.gz", progress=progress))
    files["inpainted"] = Path(result["image"])
    inpainted = ctio.to_array(ctio.read_ct(files["inpainted"]))
    around = ndimage.binary_dilation(grown, iterations=3) & ~grown & lungs
    figures["inpaint"] = {
        "outside_mask_identical": bool(np.array_equal(inpainted[~grown], clean[~grown])),
        "mean_hu_in_filled_region": float(inpainted[grown].mean()),
        "mean_hu_of_lung_around": float(clean[around].mean()) if around.any() else None,
        "mean_hu_of_nodule_before": float(clean[nodule].mean()),
    }

    # Lesion generation: the nodule's mask mirrored into the other lung (the phantom's own mask when the
    # mirror image leaves the lungs).
    mirrored = nodule[:, :, ::-1]
    new_lesion = mirrored if (lungs[mirrored].mean() > 0.9 and not (mirrored & nodule).any()) else nodule
    lesion_path = ctio.write_image(ctio.from_array(new_lesion.astype(np.uint8), phantom.image), out / "lesion_new_mask.nii.gz")
    result = timed("lesion", lambda: lesion.run(
        lesion.LesionConfig(steps=config.lesion_steps, controlnet=str(models["lesion"]), **common), files["ct"],
        lesion_path, out / "lesion_generated.nii.gz", out / "lesion_change_mask.nii.gz", progress))
    files.update(lesion_generated=Path(result["image"]), lesion_change_mask=Path(result["change_mask"]))
    generated = ctio.to_array(ctio.read_ct(files["lesion_generated"]))
    ring = ndimage.binary_dilation(new_lesion, iterations=3) & ~ndimage.binary_dilation(new_lesion, iterations=1) & lungs
    figures["lesion"] = {
        "mirrored": new_lesion is mirrored,
        "mean_hu_in_mask": float(generated[new_lesion].mean()),
        "mean_hu_around": float(generated[ring].mean()) if ring.any() else None,
        "mean_hu_in_mask_before": float(clean[new_lesion].mean()),
    }

    # Super-resolution: slabs `factor` times thicker, then back.
    factor = config.superres_factor or trained_superres_factor(models["superres"])
    thick = slab_average(phantom.image, factor)
    files["ct_thick"] = ctio.write_image(thick, out / "ct_thick.nii.gz")
    result = timed("superres", lambda: superres.run(
        superres.SuperresConfig(steps=config.superres_steps, factor=float(factor),
                                controlnet=str(models["superres"]), **common),
        files["ct_thick"], out / "superres.nii.gz", progress))
    files["superres"] = Path(result["image"])
    sr = ctio.read_ct(files["superres"])
    on_grid = ctio.resample_onto(sr, phantom.image, "linear")
    linear = ctio.resample_onto(thick, phantom.image, "linear")
    covered = body.copy()
    covered[thick.GetSize()[2] * factor:] = False  # slices beyond the last whole slab
    figures["superres"] = {
        "factor": factor, "thick_slice_mm": thick.GetSpacing()[2], "output_slice_mm": sr.GetSpacing()[2],
        "rmse_in_body_superres_hu": _rmse(ctio.to_array(on_grid), clean, covered),
        "rmse_in_body_linear_hu": _rmse(ctio.to_array(linear), clean, covered),
    }

    # Synthesis: a new chest following the phantom's organ labels.
    result = timed("synthesize", lambda: synthesize.run(
        synthesize.SynthesizeConfig(region="chest", anatomy=str(files["labels"]), steps=config.synthesize_steps,
                                    **common), out / "synthesized.nii.gz", progress))
    files["synthesized"] = Path(result["image"])
    synth = ctio.to_array(ctio.read_ct(files["synthesized"]))
    figures["synthesize"] = {
        "mean_hu_lungs": float(synth[lungs].mean()), "phantom_mean_hu_lungs": float(clean[lungs].mean()),
        "mean_hu_heart": _mean_label(synth, labels, "heart"), "phantom_mean_hu_heart": _mean_label(clean, labels, "heart"),
    }

    progress.start("montage", 1)
    files["montage"] = _montage(out / "montage.png", phantom, low_dose, thick, files, new_lesion)
    progress.step(1)
    summary = {
        "seconds_total": round(time.perf_counter() - started, 1),
        "seconds_per_stage": {k: round(v, 1) for k, v in timings.items()},
        "models": {k: str(v) for k, v in models.items()},
        "fallback_models": fallback,
        "phantom": {"region": "chest", "size": list(size), "spacing_mm": list(spacing), "seed": config.seed,
                    "dose_fraction": config.dose, "nodule_voxels": int(nodule.sum())},
        "low_dose_noise_hu_in_body": round(float(np.std((noisy - clean)[body])), 1),
        "settings": {k: v for k, v in vars(config).items()},
        "figures": figures,
        "outputs": {k: str(v) for k, v in files.items()},
        "note": ("demonstration models trained on procedural phantoms on a CPU; not for clinical use"
                 + ("; the bundled models were missing, so a tiny model was fitted on the spot and the "
                    "ControlNets are untrained" if fallback else "")),
    }
    summary_path = out / "summary.json"
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    os.replace(tmp, summary_path)
    files["summary"] = summary_path
    return {k: str(v) for k, v in files.items()}


def trained_superres_factor(model: str | os.PathLike, default: int = 5) -> int:
    """The slab thickness (in working-grid slices) a super-resolution ControlNet was fine-tuned on, from
    the training config in its card's provenance; `default` (the paper's 5) when the card does not say."""
    config = read_card(find_model(model)).provenance.get("config") or {}
    factor = (config.get("data") or {}).get("lowres_factor")
    return int(factor) if isinstance(factor, int) and factor >= 2 else default


def slab_average(image: sitk.Image, factor: int) -> sitk.Image:
    """Thick slices: each the average of `factor` consecutive slices (a trailing partial slab is dropped),
    placed at the slab's centre with spacing factor x dz: what a thick-slice reconstruction of the same
    scan measures."""
    array = ctio.to_array(image)
    n = array.shape[0] // factor
    if n < 2:
        raise InputError(f"the volume has too few slices for slabs of {factor}")
    thick = array[: n * factor].reshape(n, factor, *array.shape[1:]).mean(axis=1)
    out = sitk.GetImageFromArray(thick.astype(np.float32))
    spacing = image.GetSpacing()
    out.SetSpacing((spacing[0], spacing[1], spacing[2] * factor))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    out.SetOrigin(tuple(np.asarray(image.GetOrigin()) + direction[:, 2] * spacing[2] * (factor - 1) / 2.0))
    out.SetDirection(image.GetDirection())
    return out


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (tuple, Path)):
        return list(value) if isinstance(value, tuple) else str(value)
    raise TypeError(type(value).__name__)


def _rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where].astype(np.float64) - b[where]) ** 2)))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / total) if total else 1.0


def _mean_label(image: np.ndarray, labels: np.ndarray, name: str) -> float | None:
    where = labels == label_index(name)
    return float(image[where].mean()) if where.any() else None


def _bundled_models() -> dict[str, Path] | None:
    """Card paths of the default base model and its two ControlNets, or None when any is missing."""
    try:
        return {"base": find_model(DEFAULT_MODEL), "lesion": find_model(DEFAULT_LESION),
                "superres": find_model(DEFAULT_SUPERRES)}
    except ModelFileError:
        return None


def _fallback_models(phantom, config: DemoConfig, folder: Path, progress: Progress) -> dict[str, Path]:
    base_card = _fit_tiny_model(phantom, config, folder, progress)
    base, card = load_network(base_card)
    models = {"base": base_card}
    for task in ("lesion", "superres"):
        net = MedDiffFMControlNet.from_base(base, ControlNetConfig(task=task))
        models[task] = save_model(
            net, folder, name=f"demo-tiny-{task}-untrained", kind="controlnet", architecture=card.architecture,
            working_spacing=card.working_spacing, base_model=card.name, control=net.config.to_dict(),
            description=f"Untrained {task} ControlNet (zero output convolutions: the base model alone), "
                        "made by `meddifffm demo` when the bundled models are missing.",
        )
    return models


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
        description="Tiny model fitted by `meddifffm demo` to one procedural chest phantom (bundled models missing).",
        provenance={
            "trained_on": "one procedural chest phantom (MedDiffFMLogic.phantoms), seed %d" % config.seed,
            "steps": config.train_steps, "optimizer": "Adam 1e-3", "batch": 1,
            "command": f"meddifffm demo --train-steps {config.train_steps} --seed {config.seed}",
            "final_loss_mean_last_10": round(float(np.mean(losses[-10:])), 4),
        },
    )


def _montage(path: Path, phantom, low_dose: sitk.Image, thick: sitk.Image, files: dict[str, Path],
             new_lesion: np.ndarray) -> Path:
    """Rows: one per task, input | output, on the axial slice through the nodule."""
    plt = pyplot()

    mask = sitk.GetArrayViewFromImage(phantom.lesion_mask)
    z = int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else mask.shape[0] // 2
    z_new = int(np.argmax(new_lesion.sum(axis=(1, 2)))) if new_lesion.any() else z

    def read(key, interpolator="linear"):
        return sitk.GetArrayFromImage(ctio.resample_onto(ctio.read_ct(files[key]), phantom.image, interpolator))

    ct = sitk.GetArrayFromImage(phantom.image)
    rows = [
        ("denoise", sitk.GetArrayFromImage(low_dose), "low-dose input", read("denoised"), "denoised", z),
        ("anomaly", sitk.GetArrayFromImage(low_dose), "low-dose input", read("anomaly_map"), "anomaly map (HU)", z),
        ("inpaint", ct, "phantom with nodule", read("inpainted"), "nodule removed", z),
        ("lesion", ct, "phantom (mask outlined)", read("lesion_generated"), "lesion generated", z_new),
        ("superres", sitk.GetArrayFromImage(ctio.resample_onto(thick, phantom.image, "nearest")),
         f"{thick.GetSpacing()[2]:g} mm slabs", read("superres"), "super-resolved", z),
        ("synthesize", sitk.GetArrayFromImage(phantom.labels).astype(float), "organ labels", read("synthesized"),
         "synthesized", z),
    ]
    fig, axes = plt.subplots(len(rows), 2, figsize=(6.4, 3.1 * len(rows)))
    for (task, left, left_title, right, right_title, k), (ax_in, ax_out) in zip(rows, axes):
        if task == "synthesize":
            ax_in.imshow(left[k], cmap="tab20", interpolation="nearest")
        else:
            ax_in.imshow(left[k], cmap="gray", vmin=-1000, vmax=400)
        if task == "anomaly":
            ax_out.imshow(right[k], cmap="inferno", vmin=0, vmax=max(float(np.percentile(right, 99.9)), 1.0))
        else:
            ax_out.imshow(right[k], cmap="gray", vmin=-1000, vmax=400)
        if task == "lesion":
            ax_in.contour(new_lesion[k], levels=[0.5], colors="red", linewidths=0.8)
        ax_in.set_title(f"{task}: {left_title}", fontsize=9)
        ax_out.set_title(right_title, fontsize=9)
        ax_in.axis("off")
        ax_out.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=72)


def add_command(subparsers) -> None:
    from ..cli_args import add_common

    p = subparsers.add_parser("demo", help="a chest phantom with a nodule and its low-dose scan through every task")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    for name in ("denoise_steps", "anomaly_steps", "inpaint_steps", "lesion_steps", "superres_steps",
                 "synthesize_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(DemoConfig, name),
                       help=f"sampling steps of {name.split('_')[0]} (default {getattr(DemoConfig, name)})")
    p.add_argument("--superres-factor", type=int, default=None,
                   help="slab thickness of the super-resolution input, in slices (default: what the ControlNet "
                        "was trained for; 5, the paper's, when its card does not say)")
    p.add_argument("--train-steps", type=int, default=DemoConfig.train_steps,
                   help="training steps of the fallback tiny model (only when the bundled models are missing)")
    p.add_argument("--threads", type=int, default=DemoConfig.threads,
                   help="torch CPU threads (default 1; 2 may be faster on an idle 2-core machine)")
    add_common(p)
    p.set_defaults(run=lambda args, progress: run(
        DemoConfig(
            seed=args.seed, device=args.device, denoise_steps=args.denoise_steps, anomaly_steps=args.anomaly_steps,
            inpaint_steps=args.inpaint_steps, lesion_steps=args.lesion_steps, superres_steps=args.superres_steps,
            superres_factor=args.superres_factor, synthesize_steps=args.synthesize_steps,
            train_steps=args.train_steps, threads=args.threads,
        ),
        args.output, progress,
    ))
