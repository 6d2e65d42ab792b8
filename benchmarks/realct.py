"""The tasks on a real scan: the head CT of Debian's invesalius-examples (measurement only).

    apt-get install invesalius-examples      # or: apt-get download invesalius-examples && dpkg -x ... DIR
    .venv/bin/python benchmarks/realct.py [--crop 48,128,128] [--quick] [--model NAME] [--superres-model NAME]

Prints one JSON document (also written to <out>/realct.json; --quick writes to <out>/quick/). The
scan (Cranium.inv3, GPL-2, CTI Renato Archer: 108 x 256 x 256 at 0.957 x 0.957 x 1.5 mm, vertex to
maxilla) is read at run time and cached as NRRD under ~/.cache/meddifffm/realct; it is never committed
and never trained on. Its own (full-dose) image is the reference. Figures of merit: PSNR and SSIM from
MedDiffFMLogic.metrics in the head-and-neck window [-150, 250] HU inside the head (the largest
component above -400 HU after a 3 mm opening, which cuts the head holder off, holes filled per slice).

- denoise: quantum noise of a scan at two lower doses (25% and 10%) made on the scan's projections
  (phantoms.simulate_low_dose, on whole slices, so the noise is that of rays through the whole head;
  measured in HU with phantoms.measure_noise_hu), then the noisy input, MedDiff-FM (tasks.denoise at
  its defaults: noise level estimated from the image), BM4D and non-local means (benchmarks/quality.py's
  baselines). The baselines' parameters are tuned for SSIM on a tuning crop of the same scan with an
  independent noise draw (the strongest configuration of each peer; one real head is all there is).
- superres: slabs of three 1.5 mm slices averaged (4.5 mm, controls.slab_average) back to 1.5 mm:
  MedDiff-FM (tasks.superres at its defaults, factor 3) against trilinear and B-spline (SimpleITK).
- anomaly: a sphere of 15 mm diameter, +25 HU with a soft edge (tanh, 1 mm), added at the deepest
  point of the brain (tissue of 10-60 HU inside the skull once smoothed, so not a ventricle) in a
  cerebral hemisphere (15 mm or more from the midline, not below the brain's centre of mass) where the
  sphere fits there; the map
  of tasks.anomaly (defaults) restricted to the brain; where its maximum lies (on the lesion: within
  the 15 mm sphere) and its AUROC over brain voxels (lesion: the sphere); the image score (the map's
  maximum) of the same scan without the lesion for comparison.
- targets (issue 12, part 5): denoise never worse than the noisy input in PSNR or SSIM at either dose
  (goal: above BM4D in both); super-resolution above B-spline in PSNR and SSIM; the anomaly map's
  maximum on the lesion.

--crop NZ,NY,NX evaluates a sub-volume of that many voxels centred on the brain (a faster run);
--quick a tiny crop with few steps (the smoke test); --synthetic a made-up head instead of the scan
(tests, where the Debian file is absent); --input another CT file instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import plistlib
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from MedDiffFMLogic import ctio  # noqa: E402
from MedDiffFMLogic.algorithms import estimate_noise_hu  # noqa: E402
from MedDiffFMLogic.controls import slab_average  # noqa: E402
from MedDiffFMLogic.grids import box_around as crop_box  # noqa: E402  (slices inside the volume)
from MedDiffFMLogic.metrics import auroc, plain, psnr, ssim  # noqa: E402
from MedDiffFMLogic.modelfiles import find_model, read_card  # noqa: E402
from MedDiffFMLogic.phantoms import simulate_low_dose  # noqa: E402
from MedDiffFMLogic.phantoms.scanner import measure_noise_hu  # noqa: E402
from MedDiffFMLogic.regions import HU_WINDOWS  # noqa: E402
from MedDiffFMLogic.settings.anomaly import AnomalyConfig  # noqa: E402
from MedDiffFMLogic.settings.denoise import DenoiseConfig  # noqa: E402
from MedDiffFMLogic.settings.superres import SuperresConfig  # noqa: E402
from MedDiffFMLogic.tasks import anomaly, denoise, superres  # noqa: E402
from MedDiffFMLogic.tasks.common import DEFAULT_MODEL, DEFAULT_SUPERRES, load_model  # noqa: E402
from quality import bm4d_denoise, nlm_denoise, save_panels  # noqa: E402  (the same baselines)

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
DEFAULT_CACHE = Path.home() / ".cache" / "meddifffm" / "realct"
REGION = "head_neck"
SR_FACTOR = 3  # 3 x 1.5 mm slices per 4.5 mm slab
LESION_DIAMETER_MM = 15.0
LESION_HU = 25.0
LESION_EDGE_MM = 1.0
NOISE_SEED, TUNE_SEED = 1, 2
BM4D_MISSING = "the bm4d package is not installed (pip install -e .[bench])"


@dataclass(frozen=True)
class Plan:
    doses: tuple[float, ...]
    crop: tuple[int, int, int] | None  # (z, y, x) voxels of the evaluated sub-volume; None: the whole scan
    tune_crop: tuple[int, int, int]  # (z, y, x) voxels the baselines are tuned on
    denoise_steps: int | None  # None: the task's default
    superres_steps: int | None
    anomaly_steps: int | None
    bm4d_factors: tuple[float, ...]
    nlm_factors: tuple[float, ...]


FULL = Plan(doses=(0.25, 0.10), crop=None, tune_crop=(24, 96, 96), denoise_steps=None, superres_steps=None,
            anomaly_steps=None, bm4d_factors=(0.75, 1.0, 1.5), nlm_factors=(0.6, 0.9, 1.2))
QUICK = Plan(doses=(0.25, 0.10), crop=(12, 24, 24), tune_crop=(6, 24, 24), denoise_steps=2, superres_steps=2,
             anomaly_steps=2, bm4d_factors=(1.0,), nlm_factors=(1.0,))


# ------------------------------------------------------------------------------------------- the scan


def read_cranium(path: Path = CRANIUM, cache: Path | None = DEFAULT_CACHE) -> sitk.Image:
    """The head CT of invesalius-examples as an image in HU (int16, identity direction, centred on the
    origin; z from the skull base up to the vertex, rows anterior first as the phantoms'). The InVesalius
    project is a gzipped tar: main.plist holds the metadata, matrix.dat the raw little-endian int16
    volume in C order (z, y, x). The extracted volume is cached under `cache` (None: no cache)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: apt-get install invesalius-examples (GPL-2 head CT)")
    stat = path.stat()
    cached = cache / f"cranium_{stat.st_size}_{int(stat.st_mtime)}.nrrd" if cache is not None else None
    if cached is not None and cached.is_file():
        return sitk.ReadImage(str(cached))
    with tarfile.open(path) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
        meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        raw = tar.extractfile(members[meta["matrix"]["filename"]]).read()
    shape = tuple(meta["matrix"]["shape"])
    volume = np.frombuffer(raw, dtype=np.dtype(meta["matrix"]["dtype"]).newbyteorder("<")).reshape(shape)
    volume = np.ascontiguousarray(volume[:, ::-1]).astype(np.int16)  # InVesalius stores rows bottom-up
    image = sitk.GetImageFromArray(volume)
    spacing = [float(s) for s in meta["spacing"]]  # (x, y, z) mm
    image.SetSpacing(spacing)
    image.SetOrigin([-(n - 1) * s / 2.0 for n, s in zip(image.GetSize(), spacing)])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        ctio.write_image(image, cached)
    return image


def synthetic_head(shape=(36, 96, 96), spacing=(2.5, 2.5, 1.5), seed: int = 0) -> sitk.Image:
    """A made-up head (z, y, x voxels; spacing x, y, z mm) for tests where the Debian file is absent:
    scalp, a 6 mm skull, brain with grey-white contrast, two ventricles, a head holder below, air
    around, and a little correlated noise."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n) - (n - 1) / 2.0 for n in shape)
    z, y, x = np.meshgrid(z * spacing[2], y * spacing[1], x * spacing[0], indexing="ij")
    a, b, c = 75.0, 95.0, 110.0  # semi-axes (x, y, z) mm
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2 + ((z + 40.0) / c) ** 2)
    hu = np.full(shape, -1000.0)
    hu[r <= 1.0] = 30.0  # scalp
    hu[r <= 0.96] = 1100.0  # skull
    hu[r <= 0.88] = 38.0  # grey matter
    hu[r <= 0.75] = 28.0  # white matter
    for side in (-1.0, 1.0):
        hu[((x - side * 12.0) / 8.0) ** 2 + (y / 25.0) ** 2 + ((z + 5.0) / 15.0) ** 2 <= 1.0] = 6.0  # ventricles
    hu[(y > b + 5.0) & (y < b + 12.0) & (np.abs(x) < 60.0)] = 150.0  # a head holder, 5 mm from the head
    hu += ndimage.gaussian_filter(rng.normal(0.0, 9.0, shape), (0.0, 0.7, 0.7))
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin([-(n - 1) * s / 2.0 for n, s in zip(image.GetSize(), spacing)])
    return image


def _disk(radius_px: tuple[float, float]) -> np.ndarray:
    ry, rx = (max(int(round(r)), 1) for r in radius_px)
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    return ((yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0)[None]


def head_mask(hu: np.ndarray, spacing) -> np.ndarray:
    """The head: the largest component above -400 HU after a 3 mm opening (cuts the head holder off),
    holes (sinuses, airways) filled slice by slice."""
    mask = ndimage.binary_opening(hu > -400, structure=_disk((3.0 / spacing[1], 3.0 / spacing[0])))
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    mask = lab == 1 + int(np.argmax(ndimage.sum(mask, lab, index=range(1, n + 1))))
    return np.stack([ndimage.binary_fill_holes(s) for s in mask])


def brain_mask(hu: np.ndarray, spacing, head: np.ndarray) -> np.ndarray:
    """The brain: 10-60 HU once smoothed at 1.5 mm (grey and white matter, not CSF) inside the skull (the
    convex hull of the head's bone, above 300 HU, slice by slice: thin bone falls below 300 HU by partial
    volume, so the skull's ring is not closed everywhere) and off the bone; opened by a 3 mm ball (cuts
    thin bridges to tissue outside the skull at its base) and its largest connected component."""
    from skimage.morphology import convex_hull_image

    bone = ndimage.binary_dilation(hu > 300, structure=_disk((1.0, 1.0))) & head
    hull = np.stack([convex_hull_image(s) if s.any() else s for s in bone])
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), [1.5 / s for s in reversed(spacing)])
    mask = hull & ~bone & (smooth >= 10.0) & (smooth <= 60.0)
    r = [max(int(round(3.0 / s)), 1) for s in reversed(spacing)]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    mask = ndimage.binary_opening(mask, structure=(zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1.0)
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    return lab == 1 + int(np.argmax(ndimage.sum(mask, lab, index=range(1, n + 1))))


def sub_image(image: sitk.Image, box) -> sitk.Image:
    """The voxels in `box` (z, y, x slices) with their physical position kept."""
    return image[box[2].start:box[2].stop, box[1].start:box[1].stop, box[0].start:box[0].stop]


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def scores(result: np.ndarray, truth: np.ndarray, where: np.ndarray) -> dict:
    return {"psnr": round(psnr(result, truth, where, REGION), 2), "ssim": round(ssim(result, truth, where, REGION), 4)}


# ------------------------------------------------------------------------------------------- tasks


def low_dose(image: sitk.Image, box, dose: float, seed: int) -> sitk.Image:
    """Noise of a scan at `dose` on the slices of `box`, simulated on whole slices (the rays cross the
    whole head), then cut to the box."""
    slab = image[:, :, box[0].start:box[0].stop]
    noisy = simulate_low_dose(sitk.Cast(slab, sitk.sitkFloat32), dose, seed=seed)
    return noisy[box[2].start:box[2].stop, box[1].start:box[1].stop, :]


def bench_denoise(image, box, tune_box, head, plan: Plan, model, log, panels) -> dict:
    clean_img = sitk.Cast(sub_image(image, box), sitk.sitkFloat32)
    tune_img = sitk.Cast(sub_image(image, tune_box), sitk.sitkFloat32)
    clean, inside = arr(clean_img), head[box]
    tune_clean, tune_inside = arr(tune_img), head[tune_box]
    out = {}
    candidates = {"bm4d": (plan.bm4d_factors, lambda y, s, f: bm4d_denoise(y, f * s)),
                  "nlm": (plan.nlm_factors, lambda y, s, f: nlm_denoise(y, s, f))}
    if importlib.util.find_spec("bm4d") is None:  # the [bench] extra; the smoke test runs without it
        del candidates["bm4d"]
        log(f"BM4D left out: {BM4D_MISSING}")
    for dose in plan.doses:
        # Tuning: every candidate setting of each baseline on the tuning crop, an independent noise draw;
        # a single candidate (--quick) leaves nothing to choose.
        best: dict[str, tuple[float, float | None]] = {m: (f[0], None) for m, (f, _) in candidates.items() if len(f) == 1}
        if len(best) < len(candidates):
            tune_noisy = arr(low_dose(image, tune_box, dose, TUNE_SEED + int(dose * 1000)))
            tune_sigma = estimate_noise_hu(tune_noisy, tune_img.GetSpacing()[:2])
            for method, (factors, run) in candidates.items():
                for f in factors if method not in best else ():
                    score = ssim(run(tune_noisy, tune_sigma, f), tune_clean, tune_inside, REGION)
                    if method not in best or score > best[method][1]:
                        best[method] = (f, score)
        log(f"denoise dose {dose:g}: tuned {best}")
        noisy_img = low_dose(image, box, dose, NOISE_SEED + int(dose * 1000))
        noisy = arr(noisy_img)
        sigma = estimate_noise_hu(noisy, noisy_img.GetSpacing()[:2])
        clock = time.perf_counter()
        config = DenoiseConfig(region=REGION, model=model.name, **({"steps": plan.denoise_steps} if plan.denoise_steps else {}))
        ours, info = denoise.denoise_image(noisy_img, config, model.base)
        seconds = time.perf_counter() - clock
        results = {"noisy": noisy, "meddifffm": arr(ours)}
        results.update({m: run(noisy, sigma, best[m][0]) for m, (_, run) in candidates.items()})
        methods = {m: scores(r, clean, inside) for m, r in results.items()}
        for m in methods:
            methods[m]["psnr_gain"] = round(methods[m]["psnr"] - methods["noisy"]["psnr"], 2)
            methods[m]["ssim_gain"] = round(methods[m]["ssim"] - methods["noisy"]["ssim"], 4)
        out[f"dose_{dose:g}"] = {
            "dose_fraction": dose,
            "noise_hu_added": round(measure_noise_hu(clean_img, noisy_img), 1),  # soft tissue, eroded 3 mm
            "noise_hu_in_head": round(float(np.std((noisy - clean)[inside])), 1),
            "noise_hu_estimated_by_meddifffm": round(info.noise_level_hu, 1),
            "t_start": info.t_start, "steps": len(info.timesteps), "native_grid": info.native_grid,
            "tuned_settings": {"bm4d_sigma_factor": best["bm4d"][0] if "bm4d" in best else None,
                               "nlm_h_factor": best["nlm"][0],
                               "noise_sigma_hu": round(sigma, 1),  # estimated; the factors multiply it
                               "tuning_ssim": {m: None if v[1] is None else round(v[1], 4) for m, v in best.items()}},
            "methods": methods, "meddifffm_seconds": round(seconds, 1),
        }
        if "bm4d" not in candidates:
            out[f"dose_{dose:g}"]["left_out"] = {"bm4d": BM4D_MISSING}
        log(f"denoise dose {dose:g}: {methods}")
        panels[f"denoise_dose{dose:g}"] = (clean.shape[0] // 2, [("reference", clean)] + list(results.items()))
    return out


def bench_superres(image, box, head, plan: Plan, model, log, panels) -> dict:
    nz = (box[0].stop - box[0].start) // SR_FACTOR * SR_FACTOR  # whole slabs only
    box = (slice(box[0].start, box[0].start + nz), *box[1:])
    truth_img = sitk.Cast(sub_image(image, box), sitk.sitkFloat32)
    thick = slab_average(truth_img, SR_FACTOR)
    target = superres.output_grid(thick, factor=SR_FACTOR)
    if not ctio.same_grid(target, truth_img, tol=1e-4):
        raise RuntimeError("the super-resolved grid differs from the thin slices'")
    config = SuperresConfig(region=REGION, factor=SR_FACTOR, controlnet=model.superres_name, model=model.name,
                            **({"steps": plan.superres_steps} if plan.superres_steps else {}))
    clock = time.perf_counter()
    ours = ctio.resample_onto(superres.super_resolve(thick, config, model.superres), truth_img, "nearest")
    seconds = time.perf_counter() - clock
    results = {"trilinear": arr(ctio.resample_onto(thick, truth_img, "linear")),
               "bspline": arr(ctio.resample_onto(thick, truth_img, "bspline")), "meddifffm": arr(ours)}
    truth, inside = arr(truth_img), head[box]
    out = {"thick_mm": round(thick.GetSpacing()[2], 3), "thin_mm": round(truth_img.GetSpacing()[2], 3),
           "slabs": thick.GetSize()[2], "steps": config.steps,
           "methods": {m: scores(r, truth, inside) for m, r in results.items()}, "meddifffm_seconds": round(seconds, 1)}
    log(f"superres: {out['methods']}")
    panels["superres"] = (truth.shape[0] // 2, [("4.5 mm slabs", arr(ctio.resample_onto(thick, truth_img, "nearest")))]
                          + list(results.items()) + [("1.5 mm truth", truth)])
    return out


def face_distance(shape, spacing) -> np.ndarray:
    """mm from each voxel's centre to the nearest face of the (z, y, x) box."""
    out = np.full(shape, np.inf)
    for axis, (n, s) in enumerate(zip(shape, reversed(spacing))):
        d = (np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5) * s
        out = np.minimum(out, d.reshape([-1 if a == axis else 1 for a in range(3)]))
    return out


def lesion_profile(shape, spacing, centre) -> tuple[np.ndarray, np.ndarray]:
    """(added HU, lesion mask): a sphere of LESION_DIAMETER_MM, LESION_HU inside, a tanh edge of
    LESION_EDGE_MM (half the contrast at the sphere's surface); the mask is the sphere."""
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, reversed(spacing))], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    radius = LESION_DIAMETER_MM / 2.0
    return LESION_HU * 0.5 * (1.0 - np.tanh((r - radius) / LESION_EDGE_MM)), r <= radius


def bench_anomaly(image, box, brain_full, plan: Plan, model, log, panels) -> dict:
    base = sitk.Cast(sub_image(image, box), sitk.sitkFloat32)
    spacing = base.GetSpacing()
    brain = brain_full[box]
    if brain.sum() < 10:
        raise RuntimeError("no brain in the evaluated volume: give a larger --crop")
    # Deepest in the brain of the whole scan and away from the box's faces, so the sphere lies in the box.
    faces = face_distance(brain.shape, spacing)
    # The brain's depth matters only up to the distance to the box's faces: the distance transform needs
    # the box grown by that much, not the whole scan.
    grow = [int(np.ceil(faces.max() / sp)) + 1 for sp in reversed(spacing)]
    outer = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, brain_full.shape))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))
    depth = np.minimum(ndimage.distance_transform_edt(brain_full[outer], sampling=list(reversed(spacing)))[inner], faces)
    # In a cerebral hemisphere where it fits: off the midline (a sphere there would straddle the falx) and
    # not below the brain's centre of mass (the posterior fossa, where the cerebellum lies).
    middle = ndimage.center_of_mass(brain_full)
    lateral = np.abs(np.arange(brain.shape[2]) + box[2].start - middle[2]) * spacing[0] >= LESION_DIAMETER_MM
    upper = np.arange(brain.shape[0]) + box[0].start >= middle[0]
    candidates = brain & lateral[None, None, :] & upper[:, None, None]
    if not (candidates & (depth > LESION_DIAMETER_MM / 2.0)).any():
        candidates = brain
    centre = np.unravel_index(int(np.argmax(np.where(candidates, depth, -1.0))), depth.shape)
    added, lesion = lesion_profile(brain.shape, spacing, centre)
    sick = ctio.from_array(arr(base) + added.astype(np.float32), base)
    config = AnomalyConfig(region=REGION, model=model.name, **({"steps": plan.anomaly_steps} if plan.anomaly_steps else {}))
    clock = time.perf_counter()
    result = anomaly.anomaly_map(sick, config, model.base, brain)
    seconds = time.perf_counter() - clock
    healthy_score = anomaly.anomaly_map(base, config, model.base, brain).score
    m = arr(result.map)
    peak = np.unravel_index(int(np.argmax(np.where(brain, m, -np.inf))), m.shape)
    distance = float(np.sqrt(sum(((p - c) * s) ** 2 for p, c, s in zip(peak, centre, reversed(spacing)))))
    out = {
        "lesion": {"diameter_mm": LESION_DIAMETER_MM, "contrast_hu": LESION_HU, "edge_mm": LESION_EDGE_MM,
                   "centre_voxel_zyx": [int(c) for c in centre], "depth_in_brain_mm": round(float(depth[centre]), 1),
                   "voxels": int(lesion.sum()), "fraction_in_brain": round(float((lesion & brain).sum() / lesion.sum()), 3)},
        "brain_voxels": int(brain.sum()), "steps": config.steps, "t_start": config.t_start,
        "map_max_voxel_zyx": [int(p) for p in peak], "map_max_hu": round(float(m[peak]), 2),
        "map_max_on_lesion": bool(lesion[peak]), "map_max_distance_from_lesion_centre_mm": round(distance, 1),
        "voxel_auroc_in_brain": round(auroc(m[brain], lesion[brain]), 4),
        "mean_map_hu_lesion": round(float(m[lesion & brain].mean()), 2),
        "mean_map_hu_brain_elsewhere": round(float(m[brain & ~lesion].mean()), 2),
        "score_with_lesion": round(result.score, 2), "score_without_lesion": round(healthy_score, 2),
        "meddifffm_seconds": round(seconds, 1),
    }
    log(f"anomaly: {out}")
    panels["anomaly"] = (int(centre[0]), [("with lesion", arr(sick)), ("pseudo-healthy", arr(result.healthy)),
                                          ("map", m), ("lesion", lesion.astype(np.float32))])
    return out


def targets(document: dict) -> dict:
    """The issue's targets for the real scan, each with whether it is met (None: not measured, e.g. BM4D
    not installed)."""
    out = {}
    if "denoise" in document:
        rows = document["denoise"].values()
        out["denoise_not_worse_than_noisy"] = {
            "met": all(r["methods"]["meddifffm"]["psnr"] >= r["methods"]["noisy"]["psnr"]
                       and r["methods"]["meddifffm"]["ssim"] >= r["methods"]["noisy"]["ssim"] for r in rows),
            "what": "MedDiff-FM's PSNR and SSIM at least the noisy input's at every dose"}
        out["denoise_above_bm4d"] = {
            "met": None if any("bm4d" not in r["methods"] for r in rows) else all(r["methods"]["meddifffm"]["psnr"] > r["methods"]["bm4d"]["psnr"]
                       and r["methods"]["meddifffm"]["ssim"] > r["methods"]["bm4d"]["ssim"] for r in rows),
            "what": "goal: MedDiff-FM above tuned BM4D in PSNR and SSIM at every dose"}
    if "superres" in document:
        m = document["superres"]["methods"]
        out["superres_above_bspline"] = {
            "met": m["meddifffm"]["psnr"] > m["bspline"]["psnr"] and m["meddifffm"]["ssim"] > m["bspline"]["ssim"],
            "what": "4.5 mm -> 1.5 mm: MedDiff-FM above B-spline in PSNR and SSIM"}
    if "anomaly" in document:
        out["anomaly_max_on_lesion"] = {"met": document["anomaly"]["map_max_on_lesion"],
                                        "what": "the anomaly map's maximum in the brain lies inside the inserted lesion"}
    return out


# ------------------------------------------------------------------------------------------- main


class Models:
    def __init__(self, base: str, superres_name: str, device: str):
        self.name, self.superres_name = base, superres_name
        self.base = load_model(base, device)
        self.superres = load_model(base, device, superres_name)


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"--crop wants three positive voxel counts NZ,NY,NX, got {text!r}")
    return size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model name or card (default %(default)s)")
    parser.add_argument("--superres-model", default=DEFAULT_SUPERRES,
                        help="super-resolution ControlNet name or card (default %(default)s)")
    parser.add_argument("--crop", type=parse_size, help="NZ,NY,NX: evaluate a sub-volume of this size centred on the brain")
    parser.add_argument("--quick", action="store_true", help="a tiny crop and few steps: checks that everything runs")
    parser.add_argument("--tasks", default="denoise,superres,anomaly")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: share the machine)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for realct.json")
    parser.add_argument("--figures", help="folder for PNGs of the middle slices (they show GPL-2 data: do not commit)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="another CT file instead of the Debian head CT")
    source.add_argument("--synthetic", action="store_true", help="a made-up head instead of the scan (tests)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the extracted scan is cached")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    if args.crop:
        plan = replace(plan, crop=args.crop)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - {"denoise", "superres", "anomaly"}
    if unknown:
        parser.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from denoise, superres, anomaly")
    out = Path(args.out) / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    if args.synthetic:
        image, source_text = synthetic_head(), "synthetic stand-in head (benchmarks/realct.py synthetic_head)"
    elif args.input:
        image, source_text = ctio.read_ct(args.input, check_hu=False), str(args.input)
    else:
        image = read_cranium(CRANIUM, Path(args.cache))
        source_text = f"{CRANIUM} (invesalius-examples, GPL-2; read at run time, never committed or trained on)"
    if image.GetDimension() != 3:
        raise SystemExit("the scan must be a 3D volume")
    hu = arr(image).astype(np.float32)
    spacing = image.GetSpacing()
    head = head_mask(hu, spacing)
    brain = brain_mask(hu, spacing, head)
    if not brain.any():
        raise SystemExit("no brain found in the scan (tissue of 10-60 HU inside the skull)")
    centre = ndimage.center_of_mass(brain)
    # Without --crop: the head's bounding box (the air around it only costs time, BM4D's most of all).
    box = crop_box(hu.shape, centre, plan.crop) if plan.crop else ndimage.find_objects(head.astype(np.uint8))[0]
    tune_box = crop_box(hu.shape, centre, plan.tune_crop)
    log(f"scan {hu.shape} at {spacing}; evaluated {[(s.start, s.stop) for s in box]}")

    models = Models(args.model, args.superres_model, args.device)
    document = {
        "command": "benchmarks/realct.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scan": {"source": source_text, "size_xyz": list(image.GetSize()), "spacing_mm": [round(s, 4) for s in spacing],
                 "evaluated_box_zyx": [[s.start, s.stop] for s in box],
                 "tuning_box_zyx": [[s.start, s.stop] for s in tune_box],
                 "head_voxels_evaluated": int(head[box].sum()), "hu_window": list(HU_WINDOWS[REGION]),
                 # the reference is a real scan, with its own noise (flat soft-tissue tiles)
                 "own_noise_hu_estimated": round(estimate_noise_hu(hu[box], spacing[:2]), 1)},
        "plan": asdict(plan),
        "models": {k: {"name": v, "sha256": read_card(find_model(v)).sha256}
                   for k, v in (("base", args.model), ("superres", args.superres_model))},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                        "device": args.device, "machine": platform.machine()},
    }
    panels: dict[str, list] = {}
    runners = {
        "denoise": lambda: bench_denoise(image, box, tune_box, head, plan, models, log, panels),
        "superres": lambda: bench_superres(image, box, head, plan, models, log, panels),
        "anomaly": lambda: bench_anomaly(image, box, brain, plan, models, log, panels),
    }
    seconds = {}
    for task in tasks:
        clock = time.perf_counter()
        document[task] = runners[task]()
        seconds[task] = round(time.perf_counter() - clock, 1)
        log(f"{task} done in {seconds[task]} s")
    document["targets"] = targets(document)
    document["seconds"] = seconds
    text = json.dumps(json.loads(json.dumps(document, default=plain)), indent=2)
    tmp = out / ".realct.json.tmp"
    tmp.write_text(text + "\n")
    tmp.replace(out / "realct.json")
    if args.figures:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        for name, (k, items) in panels.items():
            save_panels(figures / f"realct_{name}.png", [(t, a[k]) for t, a in items], HU_WINDOWS[REGION],
                        heat={2, 3} if name == "anomaly" else ())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
