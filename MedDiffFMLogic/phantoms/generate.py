"""Phantom assembly: patient scale and frame, the couch, lesions, texture and blur; per-organ mean HU."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..anatomy import ANATOMY_CLASSES
from ..errors import InputError
from .atlas import _REGION_Z_RANGE
from .body import _Body
from .atlas import _l
from .config import _T, LESION_MODELS, Phantom, PhantomConfig
from .contrast import resolve_phase
from .lesions import paint_lesions, plan_lesions
from .limbs import ARMS_RAISED
from .shapes import _Canvas
from .textures import _psf_sigma, _texture

def _patient_frame(body: _Body, config: PhantomConfig):
    """The patient scale and the nominal point at the centre of the field of view."""
    fov = np.array(config.size, float) * np.array(config.spacing, float)
    half_w, front, back = body.extent(config.region)
    table = 26.0  # gap + table thickness (nominal mm)
    z0, z1 = _REGION_Z_RANGE[config.region]
    fit_xy = min(0.94 * fov[0] / (2 * half_w), 0.96 * fov[1] / (back + table - front))
    fit_z = fov[2] / (z1 - z0)
    # the whole region in view, unless that shrinks the patient below 65 % of the in-plane fit (thin slabs:
    # the z window then shows the middle of the region)
    scale = min(1.0, fit_xy, max(fit_z, 0.65 * fit_xy))
    if config.patient_scale is not None:
        scale = float(config.patient_scale)
    centre = (0.0, (front + back + table) / 2.0, (z0 + z1) / 2.0)
    return scale, centre, back


def _paint_table(cv: _Canvas, back: float):
    """A carbon-fibre couch under the patient (label 0): dense shells around a foam core, anti-aliased."""
    top = back + 1.5
    sl = cv.box((-260.0, top - 5.0, -1e4), (260.0, top + 60.0, 1e4))
    if sl is None:
        return
    shape = tuple(s.stop - s.start for s in sl)
    y = np.broadcast_to(cv.axes[1][None, sl[1], None], shape)
    x = np.broadcast_to(cv.axes[0][None, None, sl[2]], shape)
    h = cv.spacing[1] / cv.s  # voxel height in nominal mm
    curve = top + 0.0006 * x**2  # slightly curved

    def frac(a, b):  # fraction of each voxel's y extent inside [curve + a, curve + b]
        lo = np.maximum(y - h / 2, curve + a)
        hi = np.minimum(y + h / 2, curve + b)
        return np.clip(hi - lo, 0.0, h) / h

    shell = frac(0.0, 2.5) + frac(17.5, 20.0)
    core = frac(2.5, 17.5)
    hu = shell * _T["table_shell"][0] + core * _T["table_core"][0] + (1.0 - shell - core) * -1000.0
    free = (cv.lab[sl] == 0) & (np.abs(x) < 240.0) & ((shell + core) > 0)
    cv.put(sl, free, hu=hu.astype(np.float32), tex=0.0)


def _to_image(array: np.ndarray, config: PhantomConfig) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    spacing = np.asarray(config.spacing, float)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in -(np.asarray(config.size, float) - 1) / 2.0 * spacing))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


# Sub-voxel offsets (x, y, z; voxels) of the sub-grids a phantom is rendered on and averaged over: a
# Latin-hypercube pattern, so each axis sees three positions (-1/3, 0, +1/3) for the cost of three renders.
# Labels and lesion masks come from the first (centre) sub-grid.
_SUBGRIDS = ((0.0, 0.0, 0.0), (1 / 3, -1 / 3, 1 / 3), (-1 / 3, 1 / 3, -1 / 3))


def _render(body: _Body, config: PhantomConfig, frame, offset) -> _Canvas:
    """Paint the body on one sub-grid; nothing outside the body outline belongs to the patient."""
    scale, centre, back = frame
    warp = [lambda x, y, z, f=f, a=a: a * f(x, y, z) for f, a in zip(body.warp, body.warp_amp)]
    # a 3-mode unit-variance field is bounded by sqrt(2 * 3): the largest displacement in nominal mm
    cv = _Canvas(config, scale, centre, warp, warp_amp=max(body.warp_amp) * math.sqrt(6.0) + 1.0, offset=offset)
    body.paint(cv)
    outside = ~body.body_mask
    cv.lab[outside] = 0
    cv.hu[outside] = -1000.0
    cv.tex[outside] = 0.0
    _paint_table(cv, back)
    return cv


def make_phantom(config: PhantomConfig) -> Phantom:
    """A procedural CT volume (HU), its anatomy labels and its lesion mask; same config, same arrays.

    The region's body is scaled to fit the field of view (size x spacing) and built in physical space,
    so another spacing over the same field of view gives the same anatomy. It is rendered on three
    sub-voxel-shifted grids and averaged (partial volume), then blurred by the in-plane PSF and the slice
    profile. Lesions, when asked for, lie wholly inside the region's host organ (see LESION_MODELS).
    """
    if not isinstance(config, PhantomConfig):
        raise InputError("make_phantom expects a PhantomConfig")
    seed = int(config.seed)
    phase = resolve_phase(config.contrast, seed)
    body = _Body(np.random.default_rng([seed, 0]), phase)
    raised = body.arm_draw < ARMS_RAISED[config.region] if config.arms_raised is None else bool(config.arms_raised)
    body.set_arms(raised)
    frame = _patient_frame(body, config)
    organs = np.array([_l(n) for n in LESION_MODELS[config.region]["organs"]], dtype=np.uint8)
    hu = tex = labels = lesion = plan = None
    for offset in _SUBGRIDS:
        cv = _render(body, config, frame, offset)
        if plan is None:  # the centre sub-grid: labels, and where the lesions go
            plan = plan_lesions(cv, config, np.random.default_rng([seed, 2]))
            labels = cv.lab
        mask = paint_lesions(cv, plan, organs, config.spacing)
        if lesion is None:
            lesion = mask
        hu = cv.hu if hu is None else hu + cv.hu
        tex = cv.tex if tex is None else tex + cv.tex
        del cv
    n = np.float32(len(_SUBGRIDS))
    noise = _texture(np.random.default_rng([seed, 1]), labels.shape, config.spacing)
    image = hu / n + (tex / n) * noise
    image = ndimage.gaussian_filter(image, sigma=_psf_sigma(config.spacing), mode="nearest")
    np.clip(image, -1024.0, 3071.0, out=image)
    return Phantom(
        image=_to_image(image.astype(np.float32), config),
        labels=_to_image(labels, config),
        lesion_mask=_to_image(lesion.astype(np.uint8), config),
        region=config.region,
        contrast=phase,
    )


def organ_mean_hu(phantom: Phantom, erode: bool = True) -> dict[str, float]:
    """Mean HU per labelled structure (names from anatomy.ANATOMY_CLASSES), background excluded.

    With erode=True each label is eroded by one voxel first (to avoid partial volume at its edges);
    a label that erodes away is measured over all its voxels.
    """
    image = sitk.GetArrayViewFromImage(phantom.image)
    labels = sitk.GetArrayViewFromImage(phantom.labels)
    out: dict[str, float] = {}
    for value in np.unique(labels):
        if value == 0:
            continue
        m = labels == value
        if erode:
            e = ndimage.binary_erosion(m)
            if e.any():
                m = e
        out[ANATOMY_CLASSES.get(int(value), str(int(value)))] = float(image[m].mean())
    return out
