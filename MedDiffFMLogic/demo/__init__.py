"""The demo: a chest phantom with a lung nodule and its simulated quarter-dose scan, run through every
task with the bundled models; writes each task's output, a montage (input and output of each task on
one slice through the nodule) and summary.json (settings, timings and a few figures per task).

The script is its stages, in order (`STAGES`): the phantom, then one stage per task, each running the
task's own run() on files (as a user would) and measuring a few figures (metrics.py), then the montage
(montage.py) and the summary.

The scans: denoising and the anomaly map get the low-dose scan (what a patient's scan looks like);
inpainting (nodule removal), lesion generation (a nodule drawn at the mirror position in the other
lung), super-resolution (the phantom averaged into slabs `superres_factor` times thicker) and synthesis
(following the phantom's organ labels) start from the noise-free phantom, so the change is visible.

The phantom is a chest like those the base model was trained on (their field of view, at least
DEMO_FOV_MM, and patient size, from its card) on its working grid, so no task spends time resampling:
drawn and scanned whole (the noise depends on every ray through the body, as on a scanner), then cropped
in plane to at most `max_size` voxels around the nodule and, where both fit, its mirror image across the
body's midline, where lesion generation draws a new one.

Fallback: when the bundled models are missing, the demo fits a tiny model to the phantom on the spot
and pairs it with untrained ControlNets (fallback.py). The summary says so; lesion generation then
behaves like inpainting and super-resolution rests on DiffPIR's data step alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .. import ctio
from ..anatomy import label_index
from ..controls import slab_average
from ..errors import InputError
from ..metrics import dice, plain, rmse
from ..modelfiles import read_card, trained_superres_factor
from ..grids import box_around
from ..phantoms import LESION_MODELS, PhantomConfig, make_phantom, simulate_low_dose
from ..progress import SILENT, Progress
from ..settings.demo import DEMO_FOV_MM, DemoConfig
from ..tasks import anomaly, denoise, inpaint, lesion, superres, synthesize
from .fallback import DEMO_SPACING, bundled_models, fallback_models
from .montage import montage


@dataclass
class Scene:
    """What the stages share: the phantom and its scans, the files written so far, the models."""

    config: DemoConfig
    out: Path
    progress: Progress
    phantom: object
    low_dose: sitk.Image
    models: dict[str, Path]
    files: dict[str, Path]
    size: tuple[int, int, int] = (0, 0, 0)  # the phantom's voxels and spacing
    spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)
    timings: dict[str, float] = field(default_factory=dict)
    fallback: bool = False  # the models were fitted on the spot (fallback.py)
    thick: sitk.Image | None = None  # the super-resolution input
    new_lesion: np.ndarray | None = None  # the lesion stage's mask
    mirror: np.ndarray | None = None  # the nodule mirrored across the body's midline (cut where outside the crop)
    scanned_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the whole phantom, before the crop
    patient_scale: float | None = None  # the phantom's (PhantomConfig.patient_scale: None fits the field of view)

    def __post_init__(self) -> None:
        self.clean, self.noisy = ctio.to_array(self.phantom.image), ctio.to_array(self.low_dose)
        self.nodule = sitk.GetArrayFromImage(self.phantom.lesion_mask).astype(bool)
        self.labels = sitk.GetArrayFromImage(self.phantom.labels)
        self.lungs = np.isin(self.labels, [label_index(n) for n in LESION_MODELS["chest"]["organs"]])
        self.body = self.labels > 0
        self.common = {"model": str(self.models["base"]), "seed": self.config.seed, "device": self.config.device}

    def timed(self, name: str, call: Callable[[], dict]) -> dict:
        clock = time.perf_counter()
        result = call()
        self.timings[name] = time.perf_counter() - clock
        return result

    def result(self, key: str) -> np.ndarray:
        """A written result as an array (a result, not a scan: no plausible-HU check)."""
        return ctio.to_array(ctio.read_ct(self.files[key], check_hu=False))

    def mask_file(self, mask: np.ndarray, name: str) -> Path:
        return ctio.write_image(ctio.from_array(mask.astype(np.uint8), self.phantom.image), self.out / name)


def run(config: DemoConfig, output: str | os.PathLike, progress: Progress = SILENT) -> dict[str, str]:
    _check(config)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the demo's outputs")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scene = make_scene(config, out, progress)
    figures = {name: stage(scene) for name, stage in STAGES}
    progress.start("montage", 1)
    scene.files["montage"] = montage(out / "montage.png", scene.phantom, scene.low_dose, scene.thick, scene.files,
                                     scene.new_lesion)
    progress.step(1)
    scene.files["summary"] = write_summary(scene, figures, time.perf_counter() - started)
    return {k: str(v) for k, v in scene.files.items()}


def _check(config: DemoConfig) -> None:
    for name in ("denoise_steps", "anomaly_steps", "inpaint_steps", "lesion_steps", "superres_steps",
                 "synthesize_steps", "train_steps"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if config.superres_factor is not None and config.superres_factor < 2:
        raise InputError("--superres-factor must be at least 2")


def make_scene(config: DemoConfig, out: Path, progress: Progress) -> Scene:
    """The phantom (on the models' working grid), its low-dose scan, and the models."""
    models = bundled_models()
    card = None if models is None else read_card(models["base"])
    spacing = DEMO_SPACING if card is None else tuple(card.working_spacing)
    patient_scale = None if card is None else card.training_phantoms.get("patient_scale")
    trained_fov = (card.training_fov_mm() if card else None) or DEMO_FOV_MM[:2]
    fov = [max(f, t) for f, t in zip(DEMO_FOV_MM[:2], trained_fov)] + [DEMO_FOV_MM[2]]
    scanned = [max(8, int(round(f / s))) for f, s in zip(fov, spacing)]
    scanned[2] = min(scanned[2], int(config.max_size[2]))
    progress.start("phantom", 2, "chest phantom with a lung nodule")
    clock = time.perf_counter()
    whole = make_phantom(PhantomConfig(region="chest", size=tuple(scanned), spacing=spacing, lesions=1, seed=config.seed,
                                       lesion_radius_mm=(8.0, 12.0), patient_scale=patient_scale))
    progress.step(1, "low-dose simulation")
    whole_low_dose = simulate_low_dose(whole.image, config.dose, seed=config.seed)
    nodule = sitk.GetArrayFromImage(whole.lesion_mask).astype(bool)
    ys, xs = crop_around_nodule(nodule, config.max_size[:2])

    def cut(image: sitk.Image) -> sitk.Image:
        return image[xs.start:xs.stop, ys.start:ys.stop, :]

    phantom = replace(whole, image=cut(whole.image), labels=cut(whole.labels), lesion_mask=cut(whole.lesion_mask))
    low_dose = cut(whole_low_dose)
    mirror = nodule[:, :, ::-1][:, ys, xs]  # the phantom's body is centred: its midline is the middle column
    size = phantom.image.GetSize()
    files = {
        "ct": ctio.write_image(phantom.image, out / "ct.nii.gz"),
        "labels": ctio.write_image(phantom.labels, out / "labels.nii.gz"),
        "lesion_mask": ctio.write_image(phantom.lesion_mask, out / "lesion_mask.nii.gz"),
        "ct_low_dose": ctio.write_image(low_dose, out / "ct_low_dose.nii.gz"),
    }
    progress.step(2)
    timings = {"phantom": time.perf_counter() - clock}
    fallback = models is None
    if fallback:
        clock = time.perf_counter()
        models = fallback_models(phantom, config, out / "model", progress)
        timings["fit fallback model"] = time.perf_counter() - clock
    return Scene(config, out, progress, phantom, low_dose, models, files, size, spacing, timings, fallback,
                 mirror=mirror, scanned_mm=tuple(n * s for n, s in zip(whole.image.GetSize(), spacing)),
                 patient_scale=patient_scale)


def crop_around_nodule(nodule: np.ndarray, max_xy) -> tuple[slice, slice]:
    """(y, x) slices of at most `max_xy` (x, y) voxels: around the nodule (a (z, y, x) mask) and its mirror
    image across the volume's middle column when both fit, else around the nodule alone (the volume's
    middle without one)."""
    _, ny, nx = nodule.shape
    _, ys, xs = np.nonzero(nodule)
    if xs.size == 0:
        return box_around((ny, nx), (ny / 2.0, nx / 2.0), (max_xy[1], max_xy[0]))
    mirrored = nx - 1 - xs
    lo, hi = min(xs.min(), mirrored.min()), max(xs.max(), mirrored.max())
    # centred on the span's middle (+1: a box's end is exclusive), so a box as wide as the span holds it
    x_centre = (lo + hi + 1) / 2.0 if hi - lo + 1 <= max_xy[0] else (xs.min() + xs.max() + 1) / 2.0
    return box_around((ny, nx), ((ys.min() + ys.max() + 1) / 2.0, x_centre), (max_xy[1], max_xy[0]))


# ------------------------------------------------------------------------------------------- the stages


def denoise_stage(s: Scene) -> dict:
    """The low-dose scan, denoised."""
    result = s.timed("denoise", lambda: denoise.run(
        denoise.DenoiseConfig(steps=s.config.denoise_steps, **s.common), s.files["ct_low_dose"],
        s.out / "denoised.nii.gz", s.progress))
    s.files["denoised"] = Path(result["image"])
    denoised = s.result("denoised")
    return {"rmse_in_body_low_dose_hu": rmse(s.noisy, s.clean, s.body),
            "rmse_in_body_denoised_hu": rmse(denoised, s.clean, s.body)}


def anomaly_stage(s: Scene) -> dict:
    """The low-dose scan's anomaly map, restricted to the lungs (the nodule's host organ)."""
    roi_path = s.mask_file(s.lungs, "lungs.nii.gz")
    result = s.timed("anomaly", lambda: anomaly.run(
        anomaly.AnomalyConfig(steps=s.config.anomaly_steps, roi=str(roi_path), **s.common), s.files["ct_low_dose"],
        s.out / "anomaly_map.nii.gz", s.out / "anomaly_mask.nii.gz", s.out / "healthy.nii.gz", s.progress))
    s.files.update(anomaly_map=Path(result["map"]), anomaly_mask=Path(result["mask"]), healthy=Path(result["healthy"]))
    amap = s.result("anomaly_map")
    amask = sitk.GetArrayFromImage(ctio.read_label_map(s.files["anomaly_mask"])).astype(bool)
    return {"map_mean_in_nodule_hu": float(amap[s.nodule].mean()),
            "map_mean_in_rest_of_lungs_hu": float(amap[s.lungs & ~s.nodule].mean()),
            "dice_mask_vs_nodule": dice(amask, s.nodule)}


def inpaint_stage(s: Scene) -> dict:
    """The nodule removed (its mask grown by one voxel, so its blurred rim goes too)."""
    grown = ndimage.binary_dilation(s.nodule, iterations=1)
    remove_path = s.mask_file(grown, "inpaint_mask.nii.gz")
    result = s.timed("inpaint", lambda: inpaint.run(
        inpaint.InpaintConfig(steps=s.config.inpaint_steps, **s.common), s.files["ct"], remove_path,
        s.out / "inpainted.nii.gz", progress=s.progress))
    s.files["inpainted"] = Path(result["image"])
    inpainted = s.result("inpainted")
    around = ndimage.binary_dilation(grown, iterations=3) & ~grown & s.lungs
    return {"outside_mask_identical": bool(np.array_equal(inpainted[~grown], s.clean[~grown])),
            "mean_hu_in_filled_region": float(inpainted[grown].mean()),
            "mean_hu_of_lung_around": float(s.clean[around].mean()) if around.any() else None,
            "mean_hu_of_nodule_before": float(s.clean[s.nodule].mean())}


def lesion_stage(s: Scene) -> dict:
    """A nodule drawn at the mirror position in the other lung (the phantom's own mask when the mirror
    image leaves the lungs or the crop)."""
    mirrored = s.mirror
    inside = mirrored.any() and mirrored.sum() == s.nodule.sum()
    new_lesion = mirrored if (inside and s.lungs[mirrored].mean() > 0.9 and not (mirrored & s.nodule).any()) else s.nodule
    s.new_lesion = new_lesion
    lesion_path = s.mask_file(new_lesion, "lesion_new_mask.nii.gz")
    result = s.timed("lesion", lambda: lesion.run(
        lesion.LesionConfig(steps=s.config.lesion_steps, controlnet=str(s.models["lesion"]), **s.common),
        s.files["ct"], lesion_path, s.out / "lesion_generated.nii.gz", s.out / "lesion_change_mask.nii.gz",
        s.progress))
    s.files.update(lesion_generated=Path(result["image"]), lesion_change_mask=Path(result["change_mask"]))
    generated = s.result("lesion_generated")
    ring = (ndimage.binary_dilation(new_lesion, iterations=3) & ~ndimage.binary_dilation(new_lesion, iterations=1)
            & s.lungs)
    return {"mirrored": new_lesion is mirrored,
            "mean_hu_in_mask": float(generated[new_lesion].mean()),
            "mean_hu_around": float(generated[ring].mean()) if ring.any() else None,
            "mean_hu_in_mask_before": float(s.clean[new_lesion].mean())}


def superres_stage(s: Scene) -> dict:
    """Slabs `factor` times thicker, then back to thin slices."""
    factor = s.config.superres_factor or trained_superres_factor(s.models["superres"])
    s.thick = thick = slab_average(s.phantom.image, factor)
    s.files["ct_thick"] = ctio.write_image(thick, s.out / "ct_thick.nii.gz")
    result = s.timed("superres", lambda: superres.run(
        superres.SuperresConfig(steps=s.config.superres_steps, factor=float(factor),
                                controlnet=str(s.models["superres"]), **s.common),
        s.files["ct_thick"], s.out / "superres.nii.gz", s.progress))
    s.files["superres"] = Path(result["image"])
    sr = ctio.read_ct(s.files["superres"], check_hu=False)
    on_grid = ctio.resample_onto(sr, s.phantom.image, "linear")
    linear = ctio.resample_onto(thick, s.phantom.image, "linear")
    covered = s.body.copy()
    covered[thick.GetSize()[2] * factor:] = False  # slices beyond the last whole slab
    return {"factor": factor, "thick_slice_mm": thick.GetSpacing()[2], "output_slice_mm": sr.GetSpacing()[2],
            "rmse_in_body_superres_hu": rmse(ctio.to_array(on_grid), s.clean, covered),
            "rmse_in_body_linear_hu": rmse(ctio.to_array(linear), s.clean, covered)}


def synthesize_stage(s: Scene) -> dict:
    """A new chest following the phantom's organ labels."""
    result = s.timed("synthesize", lambda: synthesize.run(
        synthesize.SynthesizeConfig(region="chest", anatomy=str(s.files["labels"]), steps=s.config.synthesize_steps,
                                    **s.common), s.out / "synthesized.nii.gz", s.progress))
    s.files["synthesized"] = Path(result["image"])
    synth = s.result("synthesized")

    def mean_of(image: np.ndarray, name: str) -> float | None:
        where = s.labels == label_index(name)
        return float(image[where].mean()) if where.any() else None

    return {"mean_hu_lungs": float(synth[s.lungs].mean()), "phantom_mean_hu_lungs": float(s.clean[s.lungs].mean()),
            "mean_hu_heart": mean_of(synth, "heart"), "phantom_mean_hu_heart": mean_of(s.clean, "heart")}


STAGES: tuple[tuple[str, Callable[[Scene], dict]], ...] = (
    ("denoise", denoise_stage), ("anomaly", anomaly_stage), ("inpaint", inpaint_stage), ("lesion", lesion_stage),
    ("superres", superres_stage), ("synthesize", synthesize_stage),
)


def write_summary(s: Scene, figures: dict, seconds: float) -> Path:
    """summary.json: settings, timings, figures, outputs (written whole or not at all)."""
    summary = {
        "seconds_total": round(seconds, 1),
        "seconds_per_stage": {k: round(v, 1) for k, v in s.timings.items()},
        "models": {k: str(v) for k, v in s.models.items()},
        "fallback_models": s.fallback,
        "phantom": {"region": "chest", "size": list(s.size), "spacing_mm": list(s.spacing), "seed": s.config.seed,
                    "scanned_mm": [round(v, 1) for v in s.scanned_mm], "patient_scale": s.patient_scale,
                    "dose_fraction": s.config.dose, "nodule_voxels": int(s.nodule.sum())},
        "low_dose_noise_hu_in_body": round(float(np.std((s.noisy - s.clean)[s.body])), 1),
        "settings": {k: v for k, v in vars(s.config).items()},
        "figures": figures,
        "outputs": {k: str(v) for k, v in s.files.items()},
        "note": ("demonstration models trained on procedural phantoms on a CPU; not for clinical use"
                 + ("; the bundled models were missing, so a tiny model was fitted on the spot and the "
                    "ControlNets are untrained" if s.fallback else "")),
    }
    path, tmp = s.out / "summary.json", s.out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=plain) + "\n")
    os.replace(tmp, path)
    return path
