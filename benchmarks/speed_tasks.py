"""Speed and memory of every task: ours against the same task with MONAI's sliding-window inference in
place of ours (`speed.py --tasks`).

What is compared. Every task builds its whole-volume noise estimate in `tasks.prepare.prepare_task`
with the estimator its `run()` is handed (`estimator=`, by default `sampling.SlidingWindowEstimator`).
Each (task, volume, method) runs the task's own `run()` (read the input file, load the bundled models,
the task's sampler, write the outputs) in a fresh child process, handed:

- ours: a counting subclass of `SlidingWindowEstimator` (nothing else changes);
- baseline: `MonaiSlidingWindow`, a drop-in with the same constructor whose every call is
  `monai.inferers.sliding_window_inference(mode="gaussian", sigma_scale=0.125,
  padding_mode="replicate")` over the network, with MONAI's default `sw_batch_size=1` and the network
  built without fused attention (MONAI's default; `ControlledDenoiser` gets the same for its base UNet
  and its ControlNet). The position coordinates (the task's crop of the whole-volume frame where it
  works on a crop), the anatomy labels and the ControlNet's control volume travel as extra input
  channels that MONAI crops with the image. It evaluates every window: options of ours that skip work
  (keyword arguments of the estimator, a `Conditions.active` mask) are accepted and ignored.

MONAI has no DiffPIR or RePaint: the tasks' update rules (DiffPIR's data step, RePaint's jumps, the
anomaly reconstruction, the tasks' pre- and post-processing) are ours in both, so the baseline is "each
task with MONAI's sliding-window inference in place of ours", not an independent MONAI implementation.

Inputs: chest phantoms (`phantoms.make_phantom`, held-out seed 10001, the helpers of `quality.py`) on
the bundled models' 4 mm working grid, so that the model works on exactly the requested volume (the
field of view grows with it: 256 mm at 64 voxels, so larger volumes hold more air around the patient;
the JSON gives the body fraction). denoise and anomaly: quarter-dose scans (anomaly with 2 lesions);
inpaint: a phantom lesion (dilated by one voxel) to remove; lesion: a 20 mm sphere at the lungs' deepest
point; superres: slabs of the ControlNet's trained factor (3 working slices: 12 mm -> 4 mm; the volume's
z is rounded to whole slabs); synthesize: the phantom's organ label map as the anatomy condition and
output grid. inpaint and lesion work on a box around the mask (the mask's bounding box plus half a window
each side), not on the whole volume: their estimated volume is that box, whatever the input's size.

Steps are few (`TASK_SETTINGS`) so that the whole default run stays within minutes on one thread;
voxel-steps = the sum over estimator calls of the estimated volume's voxel count, per second of the
whole `run()` (model loading and file I/O included, the same both ways) and per second inside the
estimator alone. Peak memory: the child's VmHWM growth over its resident memory after a warm-up (one
estimator call on 48^3 with the task's models, which loads the libraries and creates the oneDNN
kernels of both batch sizes).

Agreement. The two ways' noise estimates are compared at the task's first estimator call (the same
input in both children: checked), on the voxels the task uses (its `Conditions.active` region where it
gives one): as run, and with ours given MONAI's Gaussian weight map, where they agree within
ESTIMATE_TOLERANCE (float rounding; under 1e-5 measured). As run they differ by up to 0.2-0.4 (eps units,
estimates up to about 5; up to 2 at denoise's t = 3, estimates up to 9) where only the low-weight
edges of windows overlap, 0.002 on average: MONAI's map peaks at 0.977 for an even
window and is floored at 1e-3, ours is scaled to peak at 1 and floored at 1e-4, so the two blend
window corners in different proportions. The written outputs are compared in HU (largest, 99.9th
percentile and mean |difference|). A task's clean-image estimate x0 = (x_t - sqrt(1 - a_t) eps) /
sqrt(a_t) multiplies estimate differences by 1 / sqrt(a_t): about 13 at anomaly's t = 950 and 2e4 at
t = 999, where superres and synthesize start, so at the one step run here their outputs differ by up to
the window's width where the weight maps differ (with their default 50 steps the first estimate's
weight in the result is small). denoise, at t = 3, passes sqrt(1 - a_t) ~ 0.012 of the estimate's
difference on (up to about 20 HU). inpaint and lesion use only windows' centres.

--skip-air (denoise): when the task has it, ours also runs with it on the same input (the estimate
is compared inside the body, where the task uses it), against the same baseline.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

import peakmem
from MedDiffFMLogic import ctio
from MedDiffFMLogic.network import MedDiffFMNet, coordinate_grid, whole_volume_axes
from MedDiffFMLogic.sampling import Conditions, SlidingWindowEstimator, WindowConfig
from MedDiffFMLogic.tasks.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES

TASKS = ("denoise", "anomaly", "inpaint", "lesion", "superres", "synthesize")
DEFAULT_TASK_SIZES = ("64,64,64", "128,128,64")
REGION = "chest"
PHANTOM_SEED = 10001  # held out (training.config.HELD_OUT_SEED_START + 1), as quality.py's first evaluation phantom
WORKING_MM = 4.0  # the bundled models' working spacing: inputs on it make the estimated volume the input
DOSE = 0.25
LESION_MM = 20.0
# Per task: config fields that keep a run short (a few estimator calls), and the ControlNet it loads.
TASK_SETTINGS = {
    "denoise": {"steps": 1},  # DiffPIR from t* (noise estimated from the image): 1 call
    "anomaly": {"steps": 1},  # diffuse to t = 950, 1 DDIM step back: 1 call
    # RePaint over 3 timesteps with one jump back: 999, 500, (jump to 999), 999, 500, 0: 4 calls
    "inpaint": {"steps": 3, "jump_length": 1, "resamplings": 2},
    "lesion": {"steps": 3, "jump_length": 1, "resamplings": 2, "controlnet": DEFAULT_LESION},
    "superres": {"steps": 1, "controlnet": DEFAULT_SUPERRES},  # DiffPIR from pure noise: 1 call
    "synthesize": {"steps": 1},
}
# The two ways' noise estimates (eps, about unit scale) agree when, with the same Gaussian weight
# map, they differ by at most this: float rounding through the network and the blend.
ESTIMATE_TOLERANCE = 1e-4


# ------------------------------------------------------------------------------------------- the two ways

CALLS: list[dict] = []  # per estimator call in this process: voxels, seconds, windows evaluated and in all
FIRST: dict = {}  # the first call: its estimator, input, timestep and estimate (for comparing the estimates)


def counting(cls: type) -> type:
    """`cls` whose every call is recorded in CALLS, and whose first call in FIRST."""

    class Counting(cls):
        def __call__(self, x, t):
            start = time.perf_counter()
            out = super().__call__(x, t)
            seconds = time.perf_counter() - start
            CALLS.append({"voxels": math.prod(self.shape), "seconds": seconds,
                          "windows": len(self), "evaluated": getattr(self, "active_windows", len(self))})
            if not FIRST:  # two volumes more in both ways' peak: the first input and estimate
                FIRST.update(estimator=self, x=x.detach().clone(), t=int(t), eps=out.detach().clone())
            return out

    Counting.__name__ = Counting.__qualname__ = f"Counting{cls.__name__}"
    return Counting


def estimate_with_monai_weights() -> torch.Tensor:
    """Our estimate of the first call's input with MONAI's Gaussian weight map in place of ours (MONAI's
    peaks at 0.977 for an even window and is floored at 1e-3; ours is scaled to peak at 1 and floored at
    1e-4): what tells the two ways' arithmetic apart from their weight maps."""
    from monai.data.utils import compute_importance_map

    from MedDiffFMLogic import sampling

    est = FIRST["estimator"]
    ours_window = sampling.gaussian_window
    sampling.gaussian_window = lambda size, sigma_scale, device, dtype: compute_importance_map(
        tuple(size), "gaussian", sigma_scale, device, dtype)
    try:
        same = SlidingWindowEstimator(est.denoiser, est.shape, est.conditions, est.windows, est.device, est.dtype,
                                      alphas_cumprod=est.alphas_cumprod)
    finally:
        sampling.gaussian_window = ours_window
    return same(FIRST["x"], FIRST["t"]).clone()


_PLAIN: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}


def plain_attention(denoiser: torch.nn.Module) -> torch.nn.Module:
    """The same weights with MONAI's own attention (no fused SDPA), as MONAI builds its networks by
    default; a ControlledDenoiser gets it for its base UNet and its ControlNet."""
    from MedDiffFMLogic.controlnet import ControlledDenoiser, MedDiffFMControlNet

    if id(denoiser) in _PLAIN:
        return _PLAIN[id(denoiser)][1]
    if isinstance(denoiser, ControlledDenoiser):
        control = MedDiffFMControlNet(denoiser.controlnet.base_config, denoiser.controlnet.config, fused_attention=False)
        control.load_state_dict(denoiser.controlnet.state_dict())
        plain = ControlledDenoiser(plain_attention(denoiser.base), control, denoiser.conditioning_scale)
    elif isinstance(denoiser, MedDiffFMNet):
        plain = MedDiffFMNet(denoiser.config, fused_attention=False)
        plain.load_state_dict(denoiser.state_dict())
    else:
        return denoiser
    device = next(denoiser.parameters()).device
    plain = plain.to(device).eval()
    _PLAIN[id(denoiser)] = (denoiser, plain)  # keeps the key's object alive
    return plain


class MonaiSlidingWindow:
    """Drop-in for `SlidingWindowEstimator`: at every call, MONAI's `sliding_window_inference` in
    Gaussian mode over the network, one window per call; the conditions are extra input channels."""

    def __init__(self, denoiser, shape, conditions: Conditions = Conditions(), windows: WindowConfig = WindowConfig(),
                 device="cpu", dtype=torch.float32, **ignored):
        self.denoiser = plain_attention(denoiser)
        self.shape = tuple(int(s) for s in shape)
        self.conditions = conditions
        self.windows = windows
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = denoiser.config
        edge = windows.size or cfg.window_size
        self.window = tuple(min(edge, math.ceil(n / cfg.size_divisor) * cfg.size_divisor) for n in self.shape)
        extra, self.split = [], []
        if conditions.use_position:
            axes = whole_volume_axes(self.shape) if conditions.axes is None else conditions.axes
            extra.append(coordinate_grid([a.float() for a in axes]))
            self.split.append(("coords", 3))
        if conditions.anatomy is not None:
            extra.append(conditions.anatomy[None, None].float())  # labels <= 127: exact in float32
            self.split.append(("anatomy", 1))
        if conditions.control is not None:
            extra.append(conditions.control[None].float())
            self.split.append(("control", conditions.control.shape[0]))
        self.extra = torch.cat(extra, dim=1).to(self.device, dtype) if extra else None

    def __len__(self) -> int:
        """Windows per call (MONAI's scan: the same starts as ours)."""
        from MedDiffFMLogic.sampling import window_starts

        return math.prod(len(window_starts(n, w, self.windows.overlap)) for n, w in zip(self.shape, self.window))

    @property
    def active_windows(self) -> int:
        return len(self)  # MONAI evaluates every window

    def _predict(self, window_input, t):
        kwargs, c = {}, 1
        for name, n in self.split:
            kwargs[name] = window_input[:, c : c + n]
            c += n
        if "anatomy" in kwargs:
            kwargs["anatomy"] = kwargs["anatomy"][:, 0].round().long()
        timesteps = torch.full((window_input.shape[0],), int(t), device=window_input.device, dtype=torch.long)
        return self.denoiser(window_input[:, :1], timesteps, region=self.conditions.region, **kwargs)

    @torch.inference_mode()
    def __call__(self, x, t):
        from monai.inferers import sliding_window_inference

        inputs = x if self.extra is None else torch.cat([x.to(self.dtype), self.extra], dim=1)
        return sliding_window_inference(
            inputs, self.window, 1, self._predict, overlap=self.windows.overlap, mode="gaussian",
            sigma_scale=self.windows.sigma_scale, padding_mode="replicate", t=t,
        )


ESTIMATORS = {"ours": lambda: counting(SlidingWindowEstimator), "baseline": lambda: counting(MonaiSlidingWindow)}


# ------------------------------------------------------------------------------------------- inputs


def prepare(task: str, size_xyz: tuple[int, int, int], folder: Path) -> tuple[dict, dict]:
    """Write the task's input files for a volume of `size_xyz` working voxels into `folder`; returns the
    child's spec (task, files, config fields) and a description of the input."""
    import quality  # benchmarks/quality.py: its phantom helpers
    from scipy import ndimage

    from MedDiffFMLogic.phantoms import simulate_low_dose
    from MedDiffFMLogic.controls import slab_average
    from MedDiffFMLogic.modelfiles import trained_superres_factor

    spacing = (WORKING_MM,) * 3
    files: dict[str, str] = {}
    about: dict = {"region": REGION, "phantom_seed": PHANTOM_SEED, "spacing_mm": list(spacing)}

    def write(name: str, image: sitk.Image) -> None:
        files[name] = str(ctio.write_image(image, folder / f"{task}_{name}.nii", compress=False))

    def as_label(mask: np.ndarray, like: sitk.Image) -> sitk.Image:
        return sitk.Cast(ctio.from_array(mask.astype(np.float32), like), sitk.sitkUInt8)

    if task == "superres":
        factor = trained_superres_factor(DEFAULT_SUPERRES)
        slabs = max(2, round(size_xyz[2] / factor))
        size_xyz = (size_xyz[0], size_xyz[1], slabs * factor)
        p = quality.phantom(REGION, PHANTOM_SEED, size_xyz, spacing)
        write("input", slab_average(p.image, factor))
        about.update(factor=factor, thick_mm=factor * WORKING_MM, thick_slices=slabs)
    elif task in ("denoise", "anomaly"):
        p = quality.phantom(REGION, PHANTOM_SEED, size_xyz, spacing, lesions=2 if task == "anomaly" else 0,
                            radius=(6.0, 12.0))
        write("input", simulate_low_dose(p.image, DOSE, seed=PHANTOM_SEED))
        about.update(dose=DOSE)
    elif task == "inpaint":
        p = quality.phantom(REGION, PHANTOM_SEED, size_xyz, spacing, lesions=1, radius=(8.0, 12.0))
        mask = ndimage.binary_dilation(quality.arr(p.lesion_mask).astype(bool), iterations=1)
        write("input", p.image)
        write("mask", as_label(mask, p.image))
        about.update(mask_voxels=int(mask.sum()))
    elif task == "lesion":
        p = quality.phantom(REGION, PHANTOM_SEED, size_xyz, spacing)
        organ = quality.host_organ(quality.arr(p.labels), REGION)
        depth = ndimage.distance_transform_edt(organ, sampling=spacing)
        centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
        mask = quality.sphere(depth.shape, spacing, centre, LESION_MM)
        write("input", p.image)
        write("mask", as_label(mask, p.image))
        about.update(lesion_diameter_mm=LESION_MM, mask_voxels=int(mask.sum()))
    elif task == "synthesize":
        p = quality.phantom(REGION, PHANTOM_SEED, size_xyz, spacing)
        files["anatomy"] = str(ctio.write_image(p.labels, folder / f"{task}_anatomy.nrrd"))
    else:
        raise ValueError(f"unknown task {task!r}")
    about["shape_zyx"] = list(reversed(size_xyz))
    about["body_fraction"] = round(float((quality.arr(p.labels) > 0).mean()), 3)
    outputs = {"image": str(folder / f"{task}_out.nii")}
    if task == "anomaly":
        outputs = {"map": str(folder / f"{task}_map.nii"), "healthy": str(folder / f"{task}_healthy.nii")}
    config = {"region": REGION, "device": "cpu", "seed": 0, **TASK_SETTINGS[task]}
    if task == "synthesize":
        config["anatomy"] = files.pop("anatomy")
    return {"task": task, "files": files, "outputs": outputs, "config": config}, about


# ------------------------------------------------------------------------------------------- the child

TASK_CHILD = "--task-child"


def _run_task(spec: dict, outputs: dict, model: str, estimator) -> None:
    task, files, config = spec["task"], spec["files"], dict(spec["config"])
    module = importlib.import_module(f"MedDiffFMLogic.tasks.{task}")
    config["model"] = model
    names = {"denoise": "DenoiseConfig", "anomaly": "AnomalyConfig", "inpaint": "InpaintConfig",
             "lesion": "LesionConfig", "superres": "SuperresConfig", "synthesize": "SynthesizeConfig"}
    cfg = getattr(module, names[task])(**config)
    if task in ("denoise", "superres"):
        module.run(cfg, files["input"], outputs["image"], estimator=estimator)
    elif task == "anomaly":
        module.run(cfg, files["input"], outputs["map"], healthy_out=outputs["healthy"], estimator=estimator)
    elif task in ("inpaint", "lesion"):
        module.run(cfg, files["input"], files["mask"], outputs["image"], estimator=estimator)
    else:
        module.run(cfg, outputs["image"], estimator=estimator)


def task_child(spec_path: str, method: str, threads: int, model: str) -> None:
    """In a fresh process: one task run of one method; prints one JSON line (times, voxel-steps, peak
    memory growth)."""
    torch.set_num_threads(threads)
    spec = json.loads(Path(spec_path).read_text())
    estimator = ESTIMATORS[method]()  # handed to the task's run(), which makes its estimator with it
    # Warm-up: one call on 48^3 (8 windows of 32^3: both of ours' batch sizes) with the task's models.
    from MedDiffFMLogic.tasks.common import load_model

    loaded = load_model(model, "cpu", spec["config"].get("controlnet"))
    edge = loaded.net.config.window_size * 3 // 2
    control = torch.zeros((1, edge, edge, edge)) if spec["config"].get("controlnet") else None
    estimator(loaded.net, (edge,) * 3, Conditions(region=1, control=control))(torch.zeros((1, 1, edge, edge, edge)), 500)
    del loaded
    CALLS.clear()
    FIRST.clear()
    label = spec.get("label", method)
    outputs = {k: str(Path(v).with_name(f"{label}_{Path(v).name}")) for k, v in spec["outputs"].items()}
    with peakmem.PeakGrowth() as peak:
        start = time.perf_counter()
        _run_task(spec, outputs, model, estimator)
        seconds = time.perf_counter() - start
    active = FIRST["estimator"].conditions.active
    first = {"x": FIRST["x"], "t": FIRST["t"], "eps": FIRST["eps"], "active": active}
    if method == "ours":
        first["eps_monai_weights"] = estimate_with_monai_weights()
    first_path = Path(spec_path).with_name(f"{label}_first.pt")
    torch.save(first, first_path)
    print(json.dumps({
        "seconds": round(seconds, 2),
        "estimator_seconds": round(sum(c["seconds"] for c in CALLS), 2),
        "estimator_calls": len(CALLS),
        "voxel_steps": sum(c["voxels"] for c in CALLS),
        "windows_per_call": CALLS[0]["windows"], "windows_evaluated_per_call": CALLS[0]["evaluated"],
        "peak_growth_mib": peak.mib,
        "outputs": outputs, "first_call": str(first_path),
    }))


# ------------------------------------------------------------------------------------------- the parent


def compare_outputs(ours: dict, baseline: dict) -> dict:
    """|ours - baseline| in HU over every output image (largest, 99.9th percentile, mean), and the
    outputs' scale (largest |value|)."""
    per_output = {}
    for key, path in ours.items():
        a = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float64)
        b = sitk.GetArrayFromImage(sitk.ReadImage(baseline[key])).astype(np.float64)
        d = np.abs(a - b)
        per_output[key] = {"max_abs_difference": round(float(d.max()), 3),
                           "p999_abs_difference": round(float(np.percentile(d, 99.9)), 3),
                           "mean_abs_difference": round(float(d.mean()), 4), "output_scale": round(float(np.abs(a).max()), 1)}
    first = per_output[next(iter(per_output))]
    return {**first, "units": "HU", **({"per_output": per_output} if len(per_output) > 1 else {})}


def compare_estimates(ours_path: str, baseline_path: str) -> dict:
    """The two ways' noise estimates of the first call (the same input: checked), where the task uses
    them (its `Conditions.active` voxels when it gives some), with our weight map and with MONAI's."""
    ours, base = torch.load(ours_path), torch.load(baseline_path)
    if not torch.equal(ours["x"], base["x"]) or ours["t"] != base["t"]:
        return {"skipped": "the first calls' inputs differ"}
    where = ours["active"] if ours["active"] is not None else torch.ones(ours["eps"].shape[2:], dtype=torch.bool)
    d = (ours["eps"] - base["eps"])[0, 0][where].abs()
    out = {"t": ours["t"], "voxels_compared": int(where.sum()), "max_abs_difference": round(float(d.max()), 5),
           "mean_abs_difference": round(float(d.mean()), 6), "estimate_scale": round(float(base["eps"].abs().max()), 2)}
    if "eps_monai_weights" in ours:
        same = float((ours["eps_monai_weights"] - base["eps"])[0, 0][where].abs().max())
        out.update(same_weights_max_abs_difference=float(f"{same:.2g}"), tolerance=ESTIMATE_TOLERANCE,
                   agree=same <= ESTIMATE_TOLERANCE)
    return out


def _child(spec_path: Path, method: str, args, script: str) -> dict:
    command = [sys.executable, script, TASK_CHILD, str(spec_path), "--method", method, "--threads", str(args.threads)]
    if args.model:
        command += ["--model", args.model]
    return peakmem.run_child(command)


def _entry(m: dict, voxel_steps: int, volume_mib: float) -> dict:
    return {"seconds": m["seconds"], "voxel_steps_per_s": round(voxel_steps / m["seconds"]),
            "estimator_seconds": m["estimator_seconds"],
            "estimator_voxel_steps_per_s": round(voxel_steps / max(m["estimator_seconds"], 1e-9)),
            "windows_per_step": m["windows_evaluated_per_call"], "windows_in_all": m["windows_per_call"]}


def _memory(m: dict, volume_mib: float) -> dict:
    return {"peak_growth_mib": m["peak_growth_mib"], "seconds": m["seconds"], "volume_mib": round(volume_mib, 1),
            "peak_in_volumes": round(m["peak_growth_mib"] / volume_mib, 2)}


def skip_air_available() -> bool:
    import dataclasses

    from MedDiffFMLogic.tasks.denoise import DenoiseConfig

    return any(f.name == "skip_air" for f in dataclasses.fields(DenoiseConfig))


def measure_task(task: str, size_xyz: tuple[int, int, int], args, script: str, log=None) -> dict:
    """Both ways of one task on one volume, each in its own child process (and, for denoise, ours with
    --skip-air against the same baseline)."""
    with tempfile.TemporaryDirectory(prefix=f"speed_{task}_") as tmp:
        folder = Path(tmp)
        spec, about = prepare(task, size_xyz, folder)
        (folder / "spec.json").write_text(json.dumps(spec))
        result: dict = {"task": task, "shape_zyx": about.pop("shape_zyx"), "input": about,
                        "settings": {k: v for k, v in spec["config"].items() if k not in ("region", "device", "seed", "anatomy")}}
        measured = {}
        for method in ("ours", "baseline"):
            measured[method] = _child(folder / "spec.json", method, args, script)
            if log:
                log(f"{task} {'x'.join(map(str, size_xyz))} {method}: {measured[method]}")
            if "failed" in measured[method]:
                result[method] = measured[method]
                return result
        ours, base = measured["ours"], measured["baseline"]
        voxel_steps = ours["voxel_steps"]
        if base["voxel_steps"] != voxel_steps:
            result["warning"] = f"voxel-steps differ: ours {voxel_steps}, baseline {base['voxel_steps']}"
        calls = max(ours["estimator_calls"], 1)
        volume_mib = voxel_steps // calls * 4 / 2**20
        result.update(estimated_voxels=voxel_steps // calls, estimator_calls=ours["estimator_calls"], voxel_steps=voxel_steps,
                      ours=_entry(ours, voxel_steps, volume_mib),
                      baseline={**_entry(base, voxel_steps, volume_mib), "sw_batch_size": 1, "fused_attention": False},
                      speedup=round(base["seconds"] / ours["seconds"], 2),
                      estimator_speedup=round(base["estimator_seconds"] / max(ours["estimator_seconds"], 1e-9), 2))
        result.update(compare_outputs(ours["outputs"], base["outputs"]))
        result["estimate_difference"] = compare_estimates(ours["first_call"], base["first_call"])
        result["peak_memory"] = {method: _memory(m, volume_mib) for method, m in measured.items()}
        if task == "denoise" and skip_air_available():
            variant = {**spec, "label": "ours_skip_air", "config": {**spec["config"], "skip_air": True}}
            (folder / "spec_skip_air.json").write_text(json.dumps(variant))
            m = _child(folder / "spec_skip_air.json", "ours", args, script)
            if log:
                log(f"{task} {'x'.join(map(str, size_xyz))} ours --skip-air: {m}")
            if "failed" in m:
                result["ours_skip_air"] = m
            else:
                result["ours_skip_air"] = {
                    **_entry(m, m["voxel_steps"], volume_mib),
                    "speedup": round(base["seconds"] / m["seconds"], 2),
                    "speedup_over_ours": round(ours["seconds"] / m["seconds"], 2),
                    "output_difference": compare_outputs(m["outputs"], base["outputs"]),
                    "estimate_difference": compare_estimates(m["first_call"], base["first_call"]),
                    "peak_memory": _memory(m, volume_mib),
                }
    return result


def measure_tasks(args, script: str, log=None) -> dict:
    if not peakmem.supported():
        return {"skipped": "each way runs in a child whose peak memory is read from /proc (Linux only)"}
    start = time.perf_counter()
    runs = []
    for text in args.task_sizes:
        size_xyz = tuple(int(v) for v in text.split(","))
        for task in args.tasks:
            runs.append(measure_task(task, size_xyz, args, script, log))
    return {"benchmark": "each task's run(): ours vs MONAI sliding_window_inference in place of our estimator",
            "models": {"base": args.model or DEFAULT_MODEL, "lesion": DEFAULT_LESION, "superres": DEFAULT_SUPERRES},
            "wall_seconds": round(time.perf_counter() - start, 1), "runs": runs}
