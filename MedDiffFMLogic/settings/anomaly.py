"""anomaly: its config and command (the task: tasks/anomaly.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InputError
from . import Command, File, Setting, nested
from .common import ANATOMY, DEVICE, MODEL, REGION, SEED, SKIP_AIR, WINDOWS, steps
from .windows import WindowConfig

PAPER_T_START = 950


@dataclass(frozen=True)
class AnomalyConfig:
    region: str = REGION.field()
    t_start: int = Setting(PAPER_T_START, "diffuse to this timestep (default %(default)s, the paper's)", type=int, minimum=1).field()
    steps: int = steps("anomaly", "DDIM steps back to 0 (default %(default)s)").field()
    # The option is not --seeds: one letter from --seed, which it is not (issue 15).
    seeds: int = Setting(1, "reconstructions to average, from seeds --seed, --seed + 1, ... (default %(default)s)",
                         type=int, minimum=1, flag="--reconstructions").field()  # seeds seed, seed + 1, ...
    threshold: float | None = Setting(  # HU on the map
        None, "HU threshold for --mask-out (default: median + 6 x 1.4826 x MAD of the map in the ROI)", type=float,
        above=0).field()
    k_mad: float = Setting(6.0, "the default threshold's multiple of the robust spread", cli=False).field()
    smooth_mm: float = Setting(2.0, "Gaussian smoothing of the map in mm (default 2)", type=float, minimum=0, flag="--smooth").field()
    roi: str | None = Setting(  # a label map on any grid overlapping the image
        None, "label map restricting the map (e.g. an organ segmentation; any grid overlapping the CT), or labels "
              "of the --anatomy map (numbers or TotalSegmentator names, comma separated)").field()
    roi_labels: tuple[int, ...] | None = Setting(  # None: every non-zero label
        None, "labels of --roi to use: numbers or TotalSegmentator names, comma separated (default: every "
              "non-zero label)").field()
    anatomy: str | None = ANATOMY.field()
    skip_air: bool = SKIP_AIR.field()
    model: str = MODEL.field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


def _roi(args) -> dict:
    """--roi is a label-map file, or labels of the --anatomy map."""
    from ..tasks.masks import parse_labels

    if args.roi_labels is not None and args.roi is None:
        raise InputError("--roi-labels needs --roi, the label map they refer to")
    roi, labels = args.roi, parse_labels(args.roi_labels)
    if roi is not None and not os.path.exists(roi):
        # `--roi liver` or `--roi 5,6`: labels of the organ map given with --anatomy.
        if args.anatomy is None:
            raise InputError(
                f"--roi {roi}: no such file; give a label-map file, or label names or numbers together with "
                "--anatomy (the organ label map they refer to)"
            )
        roi, labels = args.anatomy, parse_labels(roi)
    return {"roi": roi, "roi_labels": tuple(labels) if labels else None}


COMMAND = Command(
    "anomaly", "zero-shot anomaly map: residual against a pseudo-healthy reconstruction", "MedDiffFMLogic.tasks.anomaly",
    AnomalyConfig,
    files=(File("input", "the CT (file or DICOM folder); never modified", positional=True),
           File("output", "anomaly map in HU (float, input's grid)", short="-o", required=True),
           File("mask_out", "also write the thresholded map (uint8, input's grid)"),
           File("healthy_out", "also write the pseudo-healthy reconstruction (HU, input's grid)")),
    adjust=_roi,
)
