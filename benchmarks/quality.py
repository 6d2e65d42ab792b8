"""Quality of every task on held-out procedural phantoms, against what a user would run instead.

    .venv/bin/python benchmarks/quality.py [--quick] [--out benchmarks/results] > quality.json

Prints one JSON document (also written to <out>/quality.json) and writes PNGs of example slices per
task into <out>/. Phantoms use seeds >= 10000 (training.config.HELD_OUT_SEED_START), never trained
on: seed 10000 tunes the baselines, later seeds are evaluated. Scans have 5 mm slices, quarter-dose
noise (projection-domain Poisson, phantoms.simulate_low_dose; denoising also at 5% dose, whose noise
in [-1, 1] units is near the paper's sigma_n of 0.15) and inserted lesions where a task needs
them. Everything runs on the models' working grid in plane; only the slice axis is coarser.

- denoise: PSNR and SSIM inside the body (HU clipped to the region's window, data range = the
  window's width; SSIM as the mean of the axial 2D SSIM map over body voxels) for the noisy input,
  MedDiff-FM at its default settings (noise level estimated from the image) and with lambda tuned
  (10 or 1) on the tuning phantom, BM4D (`bm4d`), non-local
  means (scikit-image, 3D) and SimpleITK CurvatureFlow, each baseline's parameters tuned for SSIM on
  the tuning phantom.
- anomaly: voxel AUROC of the map inside the lesions' host organ (lungs or liver: BMAD's "masked"
  setting), Dice of the default-threshold mask against the inserted lesions, and image-level AUROC of
  the score over phantoms with and without lesions.
- inpaint (lesion removal with the base model): the outside-mask invariant, and HU statistics of the
  filled region against the host tissue around it and the lesion it replaced.
- lesion (lesion ControlNet + RePaint): spherical masks of 5-30 mm diameter at the deepest point of the
  host organ of lesion-free phantoms; contrast (mean inside minus mean of a ring around) and Dice of the
  thresholded lesion (voxels beyond half the contrast) against the mask.
- superres: 1 mm truth, 5 mm slabs (slab average), back to 1 mm; and the setting the ControlNet was
  fine-tuned on (slabs of its `lowres_factor` working slices, back to the working spacing); PSNR and
  SSIM against trilinear and B-spline interpolation (SimpleITK) inside the body.
- synthesize: per-organ mean HU of volumes synthesized from the phantoms' label maps against the
  phantoms' own (clipped to the region's window, all the model sees), and seam visibility: the mean absolute intensity step across sliding-window borders
  over that across all other planes, inside the body (1 = no seam).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedDiffFMLogic import ctio  # noqa: E402
from MedDiffFMLogic.algorithms import estimate_noise_hu  # noqa: E402
from MedDiffFMLogic.anatomy import ANATOMY_CLASSES, label_index  # noqa: E402
from MedDiffFMLogic.controls import slab_average  # noqa: E402
from MedDiffFMLogic.metrics import auroc, dice, mean, plain, psnr, ssim, window  # noqa: E402
from MedDiffFMLogic.modelfiles import find_model, read_card, trained_superres_factor  # noqa: E402
from MedDiffFMLogic.phantoms import LESION_MODELS, PhantomConfig, make_phantom, simulate_low_dose  # noqa: E402
from MedDiffFMLogic.progress import Progress  # noqa: E402
from MedDiffFMLogic.regions import HU_WINDOWS  # noqa: E402
from MedDiffFMLogic.sampling import WindowConfig, window_starts  # noqa: E402
from MedDiffFMLogic.tasks import anomaly, denoise, inpaint, lesion, superres, synthesize  # noqa: E402
from MedDiffFMLogic.tasks.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES, load_model  # noqa: E402
from MedDiffFMLogic.training.config import HELD_OUT_SEED_START  # noqa: E402

TUNE_SEED = HELD_OUT_SEED_START
FIRST_EVAL_SEED = HELD_OUT_SEED_START + 1
SLICE_MM = 5.0
DOSE = 0.25
LAMBDAS = (10.0, 1.0)  # MedDiff-FM's DiffPIR lambda candidates: the paper's, and a weaker prior
FOV_MM = (256.0, 256.0, 160.0)  # the phantom patient is scaled to fit


@dataclass(frozen=True)
class Plan:
    """How much to run: --quick checks that everything works in a few minutes; the full plan gives the
    figures."""

    regions: tuple[str, ...]
    doses: tuple[float, ...]  # low-dose fractions of the denoising scans
    eval_phantoms: int  # per region and dose (denoise)
    other_phantoms: int  # per region (inpaint, superres, synthesize)
    anomaly_phantoms: int  # with lesions, and as many without, per region
    max_size: tuple[int, int, int]  # voxels (x, y, z) at most
    denoise_steps: int
    anomaly_steps: int
    inpaint_steps: int
    lesion_steps: int
    lesion_diameters_mm: tuple[float, ...]
    superres_steps: int
    superres_slabs: int  # thick slices of the super-resolution phantoms
    synthesize_steps: int
    bm4d_factors: tuple[float, ...]
    nlm_factors: tuple[float, ...]
    curvature_iterations: tuple[int, ...]


FULL = Plan(
    regions=("chest", "abdomen"), doses=(0.25, 0.05), eval_phantoms=2, other_phantoms=1, anomaly_phantoms=2, max_size=(64, 64, 24),
    denoise_steps=10, anomaly_steps=15, inpaint_steps=25, lesion_steps=20, lesion_diameters_mm=(5.0, 10.0, 20.0, 30.0),
    superres_steps=25, superres_slabs=8, synthesize_steps=25, bm4d_factors=(0.75, 1.0, 1.5),
    nlm_factors=(0.6, 0.9, 1.2), curvature_iterations=(2, 5, 10),
)
QUICK = Plan(
    regions=("abdomen",), doses=(0.25,), eval_phantoms=1, other_phantoms=1, anomaly_phantoms=1, max_size=(48, 48, 16), denoise_steps=3,
    anomaly_steps=3, inpaint_steps=3, lesion_steps=3, lesion_diameters_mm=(10.0, 30.0), superres_steps=3,
    superres_slabs=4, synthesize_steps=3, bm4d_factors=(1.0,), nlm_factors=(1.0,), curvature_iterations=(5,),
)


# ------------------------------------------------------------------------------------------- metrics


# window, psnr, ssim, auroc, dice, mean: MedDiffFMLogic.metrics (the demo reports the same figures).


# ------------------------------------------------------------------------------------------- phantoms


def grid(working: tuple[float, float, float], plan: Plan, z_mm: float = SLICE_MM, max_z: int | None = None):
    spacing = (working[0], working[1], z_mm)
    size = [min(m, int(round(f / s))) for m, f, s in zip(plan.max_size, FOV_MM, spacing)]
    if max_z is not None:
        size[2] = max_z
    return tuple(size), spacing


def phantom(region: str, seed: int, size, spacing, lesions: int = 0, radius=(4.0, 12.0)):
    return make_phantom(PhantomConfig(region=region, size=size, spacing=spacing, lesions=lesions, seed=seed,
                                      lesion_radius_mm=radius))


def host_organ(labels: np.ndarray, region: str) -> np.ndarray:
    return np.isin(labels, [label_index(n) for n in LESION_MODELS[region]["organs"]])


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


# ------------------------------------------------------------------------------------------- baselines


def bm4d_denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm4d

    return np.asarray(bm4d.bm4d(noisy.astype(np.float64), sigma), dtype=np.float32)


def nlm_denoise(noisy: np.ndarray, sigma: float, factor: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(noisy.astype(np.float64), h=factor * sigma, sigma=sigma, patch_size=5,
                            patch_distance=6, fast_mode=True).astype(np.float32)


def curvature_flow(noisy: sitk.Image, iterations: int) -> np.ndarray:
    return arr(sitk.CurvatureFlow(noisy, 0.0625, iterations)).astype(np.float32)


def baselines(noisy: sitk.Image, plan: Plan, params: dict | None = None):
    """Every baseline at each of its candidate settings (params None) or at the given ones:
    yields (method, setting, output)."""
    y = arr(noisy).astype(np.float32)
    sigma = estimate_noise_hu(y, noisy.GetSpacing()[:2])
    for f in (plan.bm4d_factors if params is None else [params["bm4d"]]):
        yield "bm4d", f, bm4d_denoise(y, f * sigma)
    for f in (plan.nlm_factors if params is None else [params["nlm"]]):
        yield "nlm", f, nlm_denoise(y, sigma, f)
    for n in (plan.curvature_iterations if params is None else [params["curvature_flow"]]):
        yield "curvature_flow", n, curvature_flow(noisy, n)


# ------------------------------------------------------------------------------------------- tasks


def bench_denoise(plan: Plan, model, figures: Path, log) -> dict:
    out = {}
    for region in plan.regions:
        size, spacing = grid(model.card.working_spacing, plan)
        tune = phantom(region, TUNE_SEED, size, spacing)
        evals = [phantom(region, FIRST_EVAL_SEED + i, size, spacing) for i in range(plan.eval_phantoms)]
        out[region] = {}
        for dose in plan.doses:
            tune_noisy = simulate_low_dose(tune.image, dose, seed=TUNE_SEED)
            body = arr(tune.labels) > 0
            best: dict[str, tuple[float, float]] = {}
            for method, setting, result in baselines(tune_noisy, plan):
                score = ssim(result, arr(tune.image), body, region)
                if method not in best or score > best[method][1]:
                    best[method] = (setting, score)
            # MedDiff-FM gets the same chance: its lambda (paper 10) tuned on the tuning phantom too.
            for lam in LAMBDAS:
                ours, _ = denoise.denoise_image(tune_noisy, denoise.DenoiseConfig(region=region, steps=plan.denoise_steps,
                                                                                   lam=lam), model)
                score = ssim(arr(ours), arr(tune.image), body, region)
                if "meddifffm" not in best or score > best["meddifffm"][1]:
                    best["meddifffm"] = (lam, score)
            params = {k: v[0] for k, v in best.items()}
            log(f"denoise {region} dose {dose}: tuned {params}")
            rows: dict[str, list] = {k: [] for k in ("noisy", "meddifffm", "meddifffm_tuned", "bm4d", "nlm",
                                                     "curvature_flow")}
            seconds, noise, example = [], [], None
            for i, p in enumerate(evals):
                seed = FIRST_EVAL_SEED + i
                noisy = simulate_low_dose(p.image, dose, seed=seed)
                clean, body = arr(p.image), arr(p.labels) > 0
                noise.append(float(np.std((arr(noisy) - clean)[body])))
                results = {"noisy": arr(noisy)}
                clock = time.perf_counter()
                ours, info = denoise.denoise_image(noisy, denoise.DenoiseConfig(region=region, steps=plan.denoise_steps),
                                                   model)
                seconds.append(time.perf_counter() - clock)
                results["meddifffm"] = arr(ours)
                if params["meddifffm"] == denoise.DenoiseConfig.lam:
                    results["meddifffm_tuned"] = results["meddifffm"]
                else:
                    tuned, _ = denoise.denoise_image(noisy, denoise.DenoiseConfig(
                        region=region, steps=plan.denoise_steps, lam=params["meddifffm"]), model)
                    results["meddifffm_tuned"] = arr(tuned)
                for method, _, result in baselines(noisy, plan, params):
                    results[method] = result
                for method, result in results.items():
                    rows[method].append((psnr(result, clean, body, region), ssim(result, clean, body, region)))
                if example is None:
                    example = (clean, results, info)
            noisy_psnr, noisy_ssim = np.mean(rows["noisy"], axis=0)
            out[region][f"dose_{dose:g}"] = {
                "phantoms": plan.eval_phantoms, "grid_mm": list(spacing), "size": list(size),
                "noise_hu_in_body": round(mean(noise), 1), "noise_hu_estimated": round(example[2].noise_level_hu, 1),
                "t_start": example[2].t_start,
                "tuned_settings": {"bm4d_sigma_factor": params["bm4d"], "nlm_h_factor": params["nlm"],
                                   "curvature_flow_iterations": params["curvature_flow"],
                                   "meddifffm_lambda": params["meddifffm"]},
                "methods": {
                    m: {"psnr": round(float(np.mean([r[0] for r in v])), 2),
                        "ssim": round(float(np.mean([r[1] for r in v])), 4),
                        "psnr_gain": round(float(np.mean([r[0] for r in v]) - noisy_psnr), 2),
                        "ssim_gain": round(float(np.mean([r[1] for r in v]) - noisy_ssim), 4)}
                    for m, v in rows.items()
                },
                "meddifffm_seconds_per_volume": round(mean(seconds), 1),
            }
            log(f"denoise {region} dose {dose}: {out[region][f'dose_{dose:g}']['methods']}")
            clean, results, _ = example
            k = clean.shape[0] // 2
            panels = [("full dose", clean)] + [(m, r) for m, r in results.items()]
            save_panels(figures / f"denoise_{region}_dose{dose:g}.png", [(t, a[k]) for t, a in panels], HU_WINDOWS[region])
    return out


def bench_anomaly(plan: Plan, model, figures: Path, log) -> dict:
    out = {}
    for region in plan.regions:
        size, spacing = grid(model.card.working_spacing, plan)
        maps, lesions, organs, scores, labels_ = [], [], [], [], []
        dices = []
        example = None
        for i in range(2 * plan.anomaly_phantoms):
            seed = FIRST_EVAL_SEED + 100 + i
            sick = i % 2 == 0
            p = phantom(region, seed, size, spacing, lesions=2 if sick else 0, radius=(6.0, 12.0))
            noisy = simulate_low_dose(p.image, DOSE, seed=seed)
            organ = host_organ(arr(p.labels), region)
            result = anomaly.anomaly_map(noisy, anomaly.AnomalyConfig(region=region, steps=plan.anomaly_steps,
                                                                      seed=seed), model, organ)
            m, les = arr(result.map), arr(p.lesion_mask).astype(bool)
            scores.append(result.score)
            labels_.append(sick)
            if sick:
                maps.append(m[organ])
                lesions.append(les[organ])
                dices.append(dice(arr(result.mask).astype(bool), les))
                if example is None:
                    example = (arr(noisy), m, les, arr(result.healthy))
        voxel = auroc(np.concatenate(maps), np.concatenate(lesions))
        out[region] = {
            "phantoms_with_lesions": plan.anomaly_phantoms, "phantoms_without": plan.anomaly_phantoms,
            "voxel_auroc_in_host_organ": round(voxel, 4), "dice_default_threshold": round(mean(dices), 4),
            "image_auroc": round(auroc(np.asarray(scores), np.asarray(labels_)), 4),
            "scores_with_lesions": [round(s, 1) for s, l in zip(scores, labels_) if l],
            "scores_without": [round(s, 1) for s, l in zip(scores, labels_) if not l],
        }
        log(f"anomaly {region}: {out[region]}")
        noisy, m, les, healthy = example
        k = int(np.argmax(les.sum(axis=(1, 2))))
        save_panels(figures / f"anomaly_{region}.png",
                    [("low-dose input", noisy[k]), ("pseudo-healthy", healthy[k]), ("map", m[k])],
                    HU_WINDOWS[region], heat={2}, contours={0: les[k]})
    return out


def bench_inpaint(plan: Plan, model, figures: Path, log) -> dict:
    out = {}
    for region in plan.regions:
        size, spacing = grid(model.card.working_spacing, plan)
        rows = []
        example = None
        for i in range(plan.other_phantoms):
            seed = FIRST_EVAL_SEED + 200 + i
            p = phantom(region, seed, size, spacing, lesions=1, radius=(8.0, 12.0))
            clean, labels = arr(p.image), arr(p.labels)
            les = arr(p.lesion_mask).astype(bool)
            mask = ndimage.binary_dilation(les, iterations=1)
            generated = inpaint.regenerate(p.image, mask, model, region=region, steps=plan.inpaint_steps,
                                           jump_length=5, resamplings=2, eta=1.0, seed=seed,
                                           windows=WindowConfig())
            result = arr(inpaint.compose(p.image, generated, mask))
            around = ndimage.binary_dilation(mask, iterations=3) & ~mask & host_organ(labels, region)
            lesion_mean, around_mean, filled = float(clean[les].mean()), float(clean[around].mean()), result[mask]
            rows.append({
                "outside_identical": bool(np.array_equal(result[~mask], clean[~mask])),
                "filled_mean_hu": float(filled.mean()), "filled_std_hu": float(filled.std()),
                "around_mean_hu": around_mean, "around_std_hu": float(clean[around].std()),
                "lesion_mean_hu": lesion_mean,
                # 0: the filled region matches the tissue around it; 1: the lesion is still there.
                "remaining_contrast_fraction": abs(float(filled.mean()) - around_mean) / max(abs(lesion_mean - around_mean), 1e-6),
            })
            if example is None:
                example = (clean, result, mask)
        out[region] = {
            "phantoms": plan.other_phantoms,
            "outside_mask_identical": all(r["outside_identical"] for r in rows),
            **{k: round(mean([r[k] for r in rows]), 3) for k in rows[0] if k != "outside_identical"},
        }
        log(f"inpaint {region}: {out[region]}")
        clean, result, mask = example
        k = int(np.argmax(mask.sum(axis=(1, 2))))
        save_panels(figures / f"inpaint_{region}.png", [("with lesion", clean[k]), ("lesion removed", result[k])],
                    HU_WINDOWS[region], contours={0: mask[k]})
    return out


def sphere(shape, spacing_zyx, centre, diameter_mm) -> np.ndarray:
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing_zyx)], indexing="ij")
    return sum(g**2 for g in grids) <= (diameter_mm / 2.0) ** 2


def bench_lesion(plan: Plan, model, figures: Path, log) -> dict:
    out = {}
    for region in plan.regions:
        size, spacing = grid(model.card.working_spacing, plan)
        p = phantom(region, FIRST_EVAL_SEED + 300, size, spacing)
        clean, labels = arr(p.image), arr(p.labels)
        organ = host_organ(labels, region)
        spacing_zyx = tuple(reversed(spacing))
        depth = ndimage.distance_transform_edt(organ, sampling=spacing_zyx)
        centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
        rows, panels = {}, []
        for d in plan.lesion_diameters_mm:
            mask = sphere(clean.shape, spacing_zyx, centre, d)
            if not mask.any():  # thinner than a slice: at least the centre voxel
                mask[centre] = True
            config = lesion.LesionConfig(region=region, steps=plan.lesion_steps, controlnet=model.lesion_name,
                                         seed=int(d))
            result, changed = lesion.generate_lesion(p.image, mask, config, model.lesion)
            x = arr(result)
            ring = ndimage.binary_dilation(changed, iterations=2) & ~changed & organ
            background = float(x[ring].mean()) if ring.any() else float(clean[organ].mean())
            contrast = float(x[mask].mean()) - background
            found = changed & ((x - background) * np.sign(contrast) > abs(contrast) / 2.0)
            rows[f"{d:g}mm"] = {"voxels": int(mask.sum()), "contrast_hu": round(contrast, 1),
                                "dice": round(dice(found, mask), 4), "host_mean_hu": round(background, 1)}
            k = centre[0]
            panels.append((f"{d:g} mm", x[k]))
        expected = LESION_MODELS[region]["hu"]
        out[region] = {"masks": rows, "phantom_lesion_model": {"mode": LESION_MODELS[region]["mode"], "hu": expected}}
        log(f"lesion {region}: {rows}")
        save_panels(figures / f"lesion_{region}.png", [("host", clean[centre[0]])] + panels, HU_WINDOWS[region])
    return out


def bench_superres(plan: Plan, model, figures: Path, log) -> dict:
    """Two settings: the issue's 5 mm -> 1 mm, and the one the ControlNet was fine-tuned on (slabs of
    `lowres_factor` working slices -> the working spacing)."""
    ws = model.card.working_spacing
    trained = trained_superres_factor(model.superres_name)
    settings = {"5mm_to_1mm": (SLICE_MM, 1.0), f"{trained * ws[2]:g}mm_to_{ws[2]:g}mm": (trained * ws[2], ws[2])}
    out = {}
    for name, (thick_mm, thin_mm) in settings.items():
        factor = int(round(thick_mm / thin_mm))
        for region in plan.regions:
            size, spacing = grid(ws, plan, z_mm=thin_mm, max_z=plan.superres_slabs * factor)
            rows: dict[str, list] = {"trilinear": [], "bspline": [], "meddifffm": []}
            example = None
            for i in range(plan.other_phantoms):
                seed = FIRST_EVAL_SEED + 400 + i
                p = phantom(region, seed, size, spacing)
                thick = slab_average(p.image, factor)
                truth, body = arr(p.image), arr(p.labels) > 0
                target = superres.output_grid(thick, factor=factor)
                assert ctio.same_grid(target, p.image, tol=1e-6)
                config = superres.SuperresConfig(region=region, steps=plan.superres_steps,
                                                 controlnet=model.superres_name, factor=factor, seed=seed)
                results = {
                    "trilinear": arr(ctio.resample_onto(thick, target, "linear")),
                    "bspline": arr(ctio.resample_onto(thick, target, "bspline")),
                    "meddifffm": arr(superres.super_resolve(thick, config, model.superres)),
                }
                for m, r in results.items():
                    rows[m].append((psnr(r, truth, body, region), ssim(r, truth, body, region)))
                if example is None:
                    example = (truth, results, arr(ctio.resample_onto(thick, target, "nearest")))
            out.setdefault(name, {})[region] = {
                "phantoms": plan.other_phantoms, "thick_mm": thick_mm, "thin_mm": thin_mm, "in_plane_mm": list(spacing[:2]),
                "methods": {m: {"psnr": round(float(np.mean([r[0] for r in v])), 2),
                                "ssim": round(float(np.mean([r[1] for r in v])), 4)} for m, v in rows.items()},
            }
            log(f"superres {name} {region}: {out[name][region]}")
            truth, results, nearest = example
            j = truth.shape[1] // 2  # a coronal slice: the slice axis is vertical
            panels = [(f"{thick_mm:g} mm slabs", nearest[:, j]), *[(m, r[:, j]) for m, r in results.items()],
                      (f"{thin_mm:g} mm truth", truth[:, j])]
            save_panels(figures / f"superres_{name}_{region}.png", [(t, a[::-1]) for t, a in panels],
                        HU_WINDOWS[region], aspect=thin_mm / spacing[0])
    return out


def seam_ratio(x: np.ndarray, body: np.ndarray, window_edge: int, overlap: float) -> float | None:
    """Mean |step| across sliding-window borders over the mean |step| across all other planes (inside
    the body; None when the volume is a single window)."""
    at, elsewhere = [], []
    for axis, n in enumerate(x.shape):
        w = min(window_edge, n)
        borders = set()
        for s in window_starts(n, w, overlap):
            borders.update(b for b in (s, s + w) if 0 < b < n)
        step = np.abs(np.diff(x, axis=axis))
        inside = np.logical_and(np.take(body, range(n - 1), axis=axis), np.take(body, range(1, n), axis=axis))
        planes = np.arange(1, n)  # step[i] lies between planes i and i + 1, i.e. across border i + 1
        on_border = np.isin(planes, sorted(borders))
        shape = [1, 1, 1]
        shape[axis] = n - 1
        on_border = on_border.reshape(shape) & inside
        at.append(step[on_border])
        elsewhere.append(step[~on_border.astype(bool) & inside])
    at_all = np.concatenate(at)
    if at_all.size == 0:
        return None
    return float(at_all.mean() / np.concatenate(elsewhere).mean())


ORGAN_GROUPS = {
    "lungs": [n for n in LESION_MODELS["chest"]["organs"]],
    "heart": ["heart"], "aorta": ["aorta"], "liver": ["liver"], "spleen": ["spleen"],
    "kidneys": ["kidney_left", "kidney_right"], "vertebrae": [n for n in ANATOMY_CLASSES.values() if n.startswith("vertebrae_")],
    "body (other soft tissue)": ["body"],
}


def bench_synthesize(plan: Plan, model, figures: Path, tmp: Path, log) -> dict:
    out = {}
    edge = model.net.config.window_size
    overlap = WindowConfig().overlap
    for region in plan.regions:
        ws = model.card.working_spacing
        size, spacing = grid(ws, plan, z_mm=ws[2])
        synth_means: dict[str, list] = {k: [] for k in ORGAN_GROUPS}
        phantom_means: dict[str, list] = {k: [] for k in ORGAN_GROUPS}
        seams = []
        example = None
        for i in range(plan.other_phantoms):
            seed = FIRST_EVAL_SEED + 500 + i
            p = phantom(region, seed, size, spacing)
            labels_path = ctio.write_image(p.labels, tmp / f"labels_{region}_{i}.nrrd")
            result = synthesize.run(synthesize.SynthesizeConfig(region=region, anatomy=str(labels_path),
                                                                 model=model.name, steps=plan.synthesize_steps, seed=seed),
                                    tmp / f"synth_{region}_{i}.nrrd")
            # The model sees the region's window only: the phantom is compared through the same window.
            x, clean, labels = arr(ctio.read_ct(result["image"], check_hu=False)), window(arr(p.image), region), arr(p.labels)
            for group, names in ORGAN_GROUPS.items():
                where = np.isin(labels, [label_index(n) for n in names])
                eroded = ndimage.binary_erosion(where)
                where = eroded if eroded.any() else where
                if where.any():
                    synth_means[group].append(float(x[where].mean()))
                    phantom_means[group].append(float(clean[where].mean()))
            seams.append(seam_ratio(x, labels > 0, edge, overlap))
            if example is None:
                example = (labels, x, clean)
        organs = {
            g: {"synthesized_mean_hu": round(mean(synth_means[g]), 1), "phantom_mean_hu": round(mean(phantom_means[g]), 1),
                "abs_error_hu": round(abs(mean(synth_means[g]) - mean(phantom_means[g])), 1)}
            for g in ORGAN_GROUPS if synth_means[g]
        }
        out[region] = {"phantoms": plan.other_phantoms, "size": list(size), "organs": organs,
                       "seam_ratio": None if any(s is None for s in seams) else round(mean(seams), 3)}
        log(f"synthesize {region}: {out[region]}")
        labels, x, clean = example
        k = labels.shape[0] // 2
        save_panels(figures / f"synthesize_{region}.png",
                    [("labels", labels[k].astype(float)), ("synthesized", x[k]), ("phantom", clean[k])],
                    HU_WINDOWS[region], labels={0})
    return out


# ------------------------------------------------------------------------------------------- figures


def save_panels(path: Path, panels, hu_window, heat=(), contours=None, labels=(), aspect=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    axes = np.atleast_1d(axes)
    for i, (ax, (title, image)) in enumerate(zip(axes, panels)):
        if i in heat:
            ax.imshow(image, cmap="inferno", vmin=0, aspect=aspect)
        elif i in labels:
            ax.imshow(image, cmap="tab20", interpolation="nearest", aspect=aspect)
        else:
            ax.imshow(image, cmap="gray", vmin=hu_window[0], vmax=hu_window[1], aspect=aspect)
        if contours and i in contours and contours[i].any():
            ax.contour(contours[i], levels=[0.5], colors="red", linewidths=0.7)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- main


class Models:
    """The base model alone, and with each ControlNet, loaded once."""

    def __init__(self, base: str, lesion_cn: str, superres_cn: str, device: str):
        self.name, self.lesion_name, self.superres_name = base, lesion_cn, superres_cn
        self.base = load_model(base, device)
        self.lesion = load_model(base, device, lesion_cn)
        self.superres = load_model(base, device, superres_cn)
        self.card, self.net = self.base.card, self.base.net


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny volumes and few steps: checks that it all runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for quality.json and PNGs")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--lesion-controlnet", default=DEFAULT_LESION)
    parser.add_argument("--superres-controlnet", default=DEFAULT_SUPERRES)
    parser.add_argument("--tasks", default="denoise,anomaly,inpaint,lesion,superres,synthesize")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: share the machine)")
    parser.add_argument("--merge", action="store_true",
                        help="update the tasks run now in an existing quality.json, keeping the others")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    out = Path(args.out)
    if args.quick:
        out = out / "quick"
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    models = Models(args.model, args.lesion_controlnet, args.superres_controlnet, args.device)
    cards = {k: str(find_model(v)) for k, v in (("base", args.model), ("lesion", args.lesion_controlnet),
                                                  ("superres", args.superres_controlnet))}
    command = "benchmarks/quality.py" + (" --quick" if args.quick else "") + (
        f" --tasks {args.tasks}" if args.tasks != parser.get_default("tasks") else "") + (" --merge" if args.merge else "")
    document = {
        "command": command,
        "plan": {k: v for k, v in vars(plan).items()},
        "models": {k: {"card": str(Path(v).relative_to(ROOT)) if Path(v).is_relative_to(ROOT) else v,
                       "sha256": read_card(v).sha256, "working_spacing": list(read_card(v).working_spacing)}
                   for k, v in cards.items()},
        "phantoms": {"tuning_seed": TUNE_SEED, "first_eval_seed": FIRST_EVAL_SEED, "slice_mm": SLICE_MM,
                     "dose_fraction": DOSE, "held_out_from": HELD_OUT_SEED_START},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                        "device": args.device, "machine": platform.machine()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        runners = {
            "denoise": lambda: bench_denoise(plan, models.base, out, log),
            "anomaly": lambda: bench_anomaly(plan, models.base, out, log),
            "inpaint": lambda: bench_inpaint(plan, models.base, out, log),
            "lesion": lambda: bench_lesion(plan, models, out, log),
            "superres": lambda: bench_superres(plan, models, out, log),
            "synthesize": lambda: bench_synthesize(plan, models, out, Path(tmp), log),
        }
        seconds = {}
        for task in tasks:
            clock = time.perf_counter()
            document[task] = runners[task]()
            seconds[task] = round(time.perf_counter() - clock, 1)
            log(f"{task} done in {seconds[task]} s")
            # Written after every task, so that a failure later keeps what was measured.
            text = _write(out, {**document, "seconds": dict(seconds)}, args.merge or task != tasks[0])
    print(text)
    return 0


def _write(out: Path, document: dict, merge: bool) -> str:
    document = json.loads(json.dumps(document, default=plain))
    previous = out / "quality.json"
    if merge and previous.exists():
        merged = json.loads(previous.read_text())
        if merged.get("models") != document["models"]:
            raise SystemExit("--merge: the existing quality.json was made with other models; run every task")
        merged.setdefault("commands", [merged.pop("command")] if "command" in merged else [])
        if document["command"] not in merged["commands"]:
            merged["commands"].append(document["command"])
        document.pop("command")
        merged["seconds"] = {**merged.get("seconds", {}), **document.pop("seconds")}
        merged.update(document)
        document = merged
    text = json.dumps(document, indent=2)
    tmp = out / ".quality.json.tmp"
    tmp.write_text(text + "\n")
    tmp.replace(previous)
    return text



if __name__ == "__main__":
    sys.exit(main())
