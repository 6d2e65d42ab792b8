"""Quality against training steps: one point of a base model's learning curve per call.

    .venv/bin/python benchmarks/learning_curve.py --model runs/cpu-base/model/meddifffm-base-demo.json \
        [--run runs/cpu-base] [--anomaly-scans 6] [--out benchmarks/results/learning_curve.json]
    .venv/bin/python benchmarks/learning_curve.py --plot docs/images/learning_curve.png   # the curve so far

Issue 12 asks, where a target stays out of reach, for the learning curves that show how much more
compute would close it. Each call measures one exported model (the step comes from its card) with
`quality.py`'s own protocol, cut down to minutes so that every long-run session can add a point:
denoising on one held-out phantom per region at both doses (the noisy input, MedDiff-FM and BM4D at the
noise the scan's flat tissue shows, untuned: the tuned comparison is quality.py's), and optionally the
anomaly map's image and voxel AUROC over a few lesion / lesion-free pairs per region. The point is
merged into the JSON by step (the same step of the same model replaces its point), with the run's validation loss at
that step when `--run` is given; each point carries its protocol, and a point measured otherwise than the
curve's is refused. Prints the point as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (puts the project root on the path too)
from MedDiffFMLogic.metrics import plain  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "learning_curve.json"
# quality.py's full plan with one phantom per region and the baselines at one (untuned) setting each
CURVE = replace(quality.FULL, eval_phantoms=1, bm4d_factors=(1.0,), nlm_factors=(1.0,), curvature_iterations=(5,))


@dataclass
class BaseOnly:
    """What quality.py's denoise and anomaly benchmarks read of its Models: the base model alone."""

    base: object
    card: object
    fov_mm: tuple[float, float]
    patient_scale: float | None


def load_base(card_path: str, device: str, plan: quality.Plan) -> BaseOnly:
    base = quality.load_model(card_path, device)
    return BaseOnly(base, base.card, quality.plan_fov_mm(plan, base.card), plan.patient_scale)


def validation_loss(run: Path, step: int) -> float | None:
    """The run's validation loss at `step` (the last one logged at or before it)."""
    path = run / "validation.csv"
    if not path.exists():
        return None
    rows = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(path.read_text().splitlines())]
    before = [loss for s, loss in rows if s <= step]
    return before[-1] if before else None


def measure(card_path: str, run: Path | None, anomaly_scans: int, device: str, log,
            plan: quality.Plan = CURVE) -> dict:
    plan = replace(plan, anomaly_scans=anomaly_scans)
    models = load_base(card_path, device, plan)
    provenance = models.card.provenance or {}
    step = int(provenance.get("optimizer_steps", 0))
    point = {
        "step": step, "samples_seen": provenance.get("samples_seen"),
        "training_seconds": provenance.get("wall_seconds_training"), "model_sha256": models.card.sha256,
        "val_loss": validation_loss(run, step) if run else provenance.get("final_val_loss"),
        "protocol": {"plan": vars(plan), "first_eval_seed": quality.FIRST_EVAL_SEED},
    }
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as figures:  # quality.py's example PNGs: not kept here
        denoised = quality.bench_denoise(plan, models, Path(figures), log)
        point["denoise"] = {
            region: {dose: {"noise_hu": r["noise_hu_in_soft_tissue"],
                            **{m: r["methods"][m] for m in ("noisy", "meddifffm", "bm4d")}}
                     for dose, r in doses.items()}
            for region, doses in denoised.items()}
        if anomaly_scans:
            found = quality.bench_anomaly(plan, models, Path(figures), log)
            point["anomaly"] = {region: {k: r[k] for k in ("scans_with_lesions", "image_auroc", "voxel_auroc_in_host_organ")}
                                for region, r in found.items()}
    point["seconds"] = round(time.perf_counter() - clock, 1)
    return json.loads(json.dumps(point, default=plain))


def merge(path: Path, point: dict) -> dict:
    """The curve file with `point` in it (replacing a point of the same step and model), written
    atomically; a point measured with another protocol than the curve's points is refused."""
    document = json.loads(path.read_text()) if path.exists() else {}
    points = document.get("points", [])
    other = [p for p in points if p["protocol"] != point["protocol"]]
    if other:
        raise SystemExit(f"{path}: its points were measured with another protocol (step {other[0]['step']}); "
                         "give another --out")
    key = (point["step"], point["model_sha256"])
    document["points"] = sorted([p for p in points if (p["step"], p["model_sha256"]) != key] + [point],
                                key=lambda p: p["step"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    tmp.replace(path)
    return document


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = document["points"]
    steps = [p["step"] for p in points]
    regions = sorted({r for p in points for r in p.get("denoise", {})})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for region in regions:
        for dose, style in (("dose_0.25", "-"), ("dose_0.1", "--")):
            ours = [p["denoise"][region][dose]["meddifffm"]["psnr"] - p["denoise"][region][dose]["bm4d"]["psnr"]
                    if dose in p.get("denoise", {}).get(region, {}) else float("nan") for p in points]
            axes[0].plot(steps, ours, style, marker="o", label=f"{region} {dose.replace('dose_', '')}")
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set(xlabel="optimizer steps", ylabel="PSNR(MedDiff-FM) - PSNR(BM4D), dB", title="denoise against BM4D")
    axes[0].legend(fontsize=7)
    losses = [(p["step"], p["val_loss"]) for p in points if p.get("val_loss") is not None]
    if losses:
        axes[1].plot(*zip(*losses), marker="o")
    axes[1].set(xlabel="optimizer steps", ylabel="validation loss (L1 on the noise)", title="validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="the exported base model's card")
    parser.add_argument("--run", type=Path, help="its run folder (for the validation loss at the card's step)")
    parser.add_argument("--anomaly-scans", type=int, default=0, help="lesion / lesion-free pairs per region (default 0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--plot", type=Path, help="draw the curve so far into this PNG")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.model and not args.plot:
        parser.error("give --model (measure a point) and/or --plot (draw the curve)")
    quality.torch.set_num_threads(args.threads)
    if args.model:
        started = time.perf_counter()

        def log(message: str) -> None:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

        point = measure(args.model, args.run, args.anomaly_scans, args.device, log)
        merge(args.out, point)
        print(json.dumps(point, indent=1))
    if args.plot:
        plot(json.loads(args.out.read_text()), args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
