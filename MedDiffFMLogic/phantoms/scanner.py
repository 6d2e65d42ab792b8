"""The scanner: quantum noise of a low-dose CT scan added to a clean phantom (HU).

The noise is made the way a CT scanner makes it: the clean slice is projected (parallel beam), photon
counts are drawn per detector bin and view (Poisson, with a little electronic noise), taken back to line
integrals, and the difference from the clean projections is reconstructed by filtered back-projection
with a soft-tissue kernel. The scanner has a fixed physical geometry (detector bins of a given width at
the isocentre, a given number of views per rotation, a kernel defined in line pairs per mm) and each
slice collects the photons of its own thickness, so the noise at a given dose does not depend on the
voxel grid the phantom was drawn on, except through the slice thickness (noise ~ 1 / sqrt(thickness)),
as on a real scanner. The noise comes out correlated in-plane, stronger through wide bodies and along
rays through bone, with streaks where dense bone starves the detector of photons.

The tube current is modulated as a clinical scanner's automatic exposure control does it (every
clinical scanner since about 2005): per slice to the patient's size (the water-equivalent diameter seen
in the projections, with a strength between constant dose and constant noise), and within a rotation
to the attenuation of each view (mA ~ sqrt of the view's largest attenuation, the rule that minimises
the noise for a given dose; Gies et al., Med. Phys. 26, 1999), keeping the slice's mean dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import fft as sfft
from scipy import ndimage, sparse

from ..errors import InputError

__all__ = [
    "simulate_low_dose",
    "measure_noise_hu",
    "Scanner",
    "KERNELS",
    "MU_WATER_PER_MM",
    "DEFAULT_FULL_DOSE_PHOTONS",
    "REFERENCE_WATER_DIAMETER_MM",
]

# Linear attenuation of water at an effective energy of about 70 keV, per mm.
MU_WATER_PER_MM = 0.0192
# Unattenuated photons per view through 1 mm x 1 mm of detector (measured at the isocentre) at full dose,
# for the reference patient (below; the exposure control scales them per slice).
# Calibrated (seeds/scanner.md) so that full-dose 1 mm slices of adult-size abdomen phantoms (patient_scale
# 1; seeds 0 and 10001, about 280 x 230 and 330 x 265 mm) show about 12.5 HU of noise in their soft tissue
# with the standard kernel and the default modulation, and a quarter dose about twice that, as on the
# Mayo low-dose CT data (1 mm, full dose 10-15 HU, scanners with automatic exposure control).
DEFAULT_FULL_DOSE_PHOTONS = 4.6e5
# The exposure control's reference patient (a typical 70-80 kg adult, as the scanners define it): water-
# equivalent diameter (AAPM report 220) of an adult abdomen. It only fixes what full_dose_photons means.
REFERENCE_WATER_DIAMETER_MM = 280.0
# Reconstruction kernels: ramp filter times a Hann window reaching zero at this frequency (line pairs
# per mm). "standard" resembles a body soft-tissue kernel (noise power peaking near 0.2 lp/mm).
KERNELS = {"smooth": 0.5, "standard": 0.7, "sharp": 1.0}
# Views the simulation back-projects (the scanner's own views set the photon budget; see _noise_hu).
SIMULATED_VIEWS = 360
# Grid of the clean projections, which set only the photon counts: pixels and bins of about this size.
COARSE_MM = 2.0
COARSE_VIEWS = 180


@dataclass(frozen=True)
class Scanner:
    """Physical geometry of the simulated scanner (parallel beam, one rotation per slice)."""

    detector_bin_mm: float = 0.6  # bin width at the isocentre
    views: int = 1000  # projections per rotation
    kernel: str = "standard"
    electronic_noise: float = 8.0  # SD of the detector's electronic noise, in photon counts per bin
    # Automatic exposure control, per slice: photons x (attenuation of the slice's water-equivalent
    # diameter / the reference patient's) ** strength. 0: a fixed tube current (constant dose); 1: constant
    # noise; 0.5, between them, as the vendors' "average" adaptation (bigger patients get more dose and
    # still somewhat more noise). Not fitted to a benchmark.
    exposure_control: float = 0.5
    # Angular modulation within a rotation: photons per view ~ sqrt(the view's largest attenuation),
    # normalised to the same photons per rotation
    angular_modulation: bool = True

    def __post_init__(self):
        if not (math.isfinite(float(self.detector_bin_mm)) and float(self.detector_bin_mm) > 0):
            raise InputError(f"detector_bin_mm must be a positive number of mm, got {self.detector_bin_mm!r}")
        if int(self.views) != self.views or int(self.views) < 16:
            raise InputError(f"views must be an integer of at least 16, got {self.views!r}")
        if self.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}")
        if not (float(self.electronic_noise) >= 0):
            raise InputError(f"electronic_noise must be >= 0, got {self.electronic_noise!r}")
        if not (0.0 <= float(self.exposure_control) <= 1.0):
            raise InputError(f"exposure_control must be in [0, 1] (0: fixed tube current, 1: constant noise), "
                             f"got {self.exposure_control!r}")
        if self.angular_modulation not in (True, False):
            raise InputError(f"angular_modulation must be true or false, got {self.angular_modulation!r}")


# ---------------------------------------------------------------------------------------------------
# Projection geometry: sparse linear-interpolation matrices between pixel centres and detector bins
# ---------------------------------------------------------------------------------------------------


def _centres(n: int, step: float) -> np.ndarray:
    # The slice is centred on the isocentre (as the phantoms are).
    return (np.arange(n) - (n - 1) / 2.0) * step


def _interp_matrix(xs, ys, angles, nbins: int, bin_mm: float) -> sparse.csr_matrix:
    """Rows: the pixels of the grid ``ys`` x ``xs`` (mm, row-major); columns: (view, bin) pairs. Entry =
    linear-interpolation weight of the bin at the pixel's projected position: the matrix back-projects
    (interpolates filtered projections at the pixel centres), its transpose splats pixels onto bins.
    Built row by row in order, so no sorting is needed."""
    nviews = len(angles)
    half = (nbins - 1) / 2.0
    cx = (np.outer(xs, np.cos(angles)) / bin_mm + half).astype(np.float32)  # (nx, views)
    sy = (np.outer(ys, np.sin(angles)) / bin_mm).astype(np.float32)  # (ny, views)
    t = (sy[:, None, :] + cx[None, :, :]).reshape(-1, nviews)  # (pixels, views)
    i0 = np.floor(t)
    w1 = t - i0
    i0 = np.clip(i0.astype(np.int32), 0, nbins - 2)
    i0 += (np.arange(nviews, dtype=np.int32) * nbins)[None, :]
    indices = np.empty(t.shape + (2,), dtype=np.int32)
    indices[..., 0] = i0
    indices[..., 1] = i0 + 1
    data = np.empty(t.shape + (2,), dtype=np.float32)
    data[..., 1] = w1
    data[..., 0] = 1.0 - w1
    indptr = np.arange(0, indices.size + 1, 2 * nviews, dtype=np.int64)
    return sparse.csr_matrix((data.reshape(-1), indices.reshape(-1), indptr), shape=(t.shape[0], nviews * nbins))


def _view_chunks(nviews: int, npix: int, max_entries: float = 6.0e6):
    step = max(1, min(nviews, int(max_entries // (2 * npix))))
    return [(start, min(start + step, nviews)) for start in range(0, nviews, step)]


def _kernel_response(nbins: int, bin_mm: float, cutoff_lpmm: float) -> tuple[int, np.ndarray]:
    """FFT length and frequency response of the band-limited ramp (Ram-Lak, sampled in space so that the
    DC term is right) times a Hann window reaching zero at ``cutoff_lpmm``."""
    nfft = 1 << int(math.ceil(math.log2(2 * nbins)))
    n = np.fft.fftfreq(nfft) * nfft  # integer lags
    h = np.zeros(nfft)
    h[0] = 1.0 / (4.0 * bin_mm**2)
    odd = (np.abs(n) % 2) == 1
    h[odd] = -1.0 / (math.pi**2 * n[odd] ** 2 * bin_mm**2)
    ramp = np.real(np.fft.rfft(h)) * bin_mm  # discrete convolution times the bin width
    f = np.fft.rfftfreq(nfft, d=bin_mm)
    window = np.where(f < cutoff_lpmm, 0.5 * (1.0 + np.cos(np.pi * f / cutoff_lpmm)), 0.0)
    return nfft, ramp * window


# ---------------------------------------------------------------------------------------------------
# Low-dose simulation
# ---------------------------------------------------------------------------------------------------


def simulate_low_dose(
    image: sitk.Image,
    dose_fraction: float = 0.25,
    *,
    full_dose_photons: float = DEFAULT_FULL_DOSE_PHOTONS,
    seed: int = 0,
    slice_thickness_mm: float | None = None,
    scanner: Scanner | None = None,
) -> sitk.Image:
    """Add the quantum noise of a scan at ``dose_fraction`` of full dose to a clean CT (HU).

    Per axial slice: HU -> attenuation (mu = mu_water * (1 + HU / 1000)); parallel-beam projections
    at the scanner's detector bins and views; counts N = N0 exp(-p) + sqrt(N0 exp(-p) + e^2) z (Poisson
    with the detector's electronic noise e, in its Gaussian form), at least 1, with N0 =
    ``full_dose_photons`` x dose x bin width x slice thickness x the tube current the scanner's exposure
    control sets for the slice and the view (``Scanner.exposure_control``, ``angular_modulation``: full
    dose is the protocol's dose for this patient); back to line integrals; filtered back-
    projection (ramp x the kernel's window) of the *difference* between noisy and clean projections,
    sampled at the slice's pixel centres. That noise image is added to the input: the result is the clean
    image plus CT noise whose SD grows like 1 / sqrt(dose x thickness) and does not depend on the pixel
    size (the kernel, not the pixel, sets the resolution, as on a scanner). The slice is taken as centred
    on the isocentre. ``slice_thickness_mm`` defaults to the z spacing (1 mm for a 2D image).
    The result is float32 with the input's geometry; the input is not modified. Same seed, same noise.
    About 1-2 s per 64 slices of 96 x 96 and about 3 s for one 512 x 512 slice.
    """
    if not isinstance(image, sitk.Image) or image.GetDimension() not in (2, 3):
        raise InputError("simulate_low_dose expects a 2D or 3D SimpleITK image in HU")
    if not (0.0 < float(dose_fraction) <= 1.0e3):
        raise InputError(f"dose_fraction must be positive (1.0 = full dose), got {dose_fraction!r}")
    if not (float(full_dose_photons) > 0):
        raise InputError(f"full_dose_photons must be positive, got {full_dose_photons!r}")
    scanner = scanner if scanner is not None else Scanner()
    spacing = image.GetSpacing()
    if slice_thickness_mm is None:
        slice_thickness_mm = float(spacing[2]) if image.GetDimension() == 3 else 1.0
    if not (math.isfinite(float(slice_thickness_mm)) and float(slice_thickness_mm) > 0):
        raise InputError(f"slice_thickness_mm must be a positive number of mm, got {slice_thickness_mm!r}")
    hu = sitk.GetArrayFromImage(image).astype(np.float64)
    if hu.ndim == 2:
        hu = hu[None]
    if not np.isfinite(hu).all():
        raise InputError("the image holds NaN or infinite values; simulate_low_dose needs finite HU")
    nz, ny, nx = hu.shape
    sx, sy = float(spacing[0]), float(spacing[1])
    noise = _noise_hu(hu, sx, sy, float(full_dose_photons) * float(dose_fraction) * float(slice_thickness_mm),
                      scanner, np.random.default_rng(int(seed)))
    out = (hu + noise).astype(np.float32)
    result = sitk.GetImageFromArray(out[0] if image.GetDimension() == 2 else out)
    result.CopyInformation(image)
    return result


def _noise_hu(hu: np.ndarray, sx: float, sy: float, photons_per_mm: float, scanner: Scanner, rng) -> np.ndarray:
    """FBP noise (HU) for a stack of slices (z, y, x); ``photons_per_mm``: N0 per mm of detector bin."""
    nz, ny, nx = hu.shape
    bin_mm = float(scanner.detector_bin_mm)
    radius = math.hypot(nx * sx, ny * sy) / 2.0 + 2.0 * bin_mm
    nbins = 2 * int(math.ceil(radius / bin_mm)) + 1
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)

    # Clean projections on a coarse grid (pixels and bins of about 2 mm, one view per degree): they set
    # only the photon counts, which vary slowly, and are then interpolated to the fine detector grid.
    fy, fx = max(1, int(COARSE_MM // sy)), max(1, int(COARSE_MM // sx))
    py, px = -ny % fy, -nx % fx
    mu_c = np.pad(mu, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)))  # air around
    mu_c = mu_c.reshape(nz, mu_c.shape[1] // fy, fy, mu_c.shape[2] // fx, fx).mean(axis=(2, 4))
    csy, csx = sy * fy, sx * fx
    coarse_bin = max(min(csx, csy), bin_mm)
    ncoarse = 2 * int(math.ceil(radius / coarse_bin)) + 1
    coarse_angles = np.arange(COARSE_VIEWS) * (math.pi / COARSE_VIEWS)
    xs_c, ys_c = _centres(mu_c.shape[2], csx), _centres(mu_c.shape[1], csy)
    mu_c = mu_c.reshape(nz, -1).T  # (pixels, slices)
    parts = []
    for v0, v1 in _view_chunks(COARSE_VIEWS, mu_c.shape[0]):
        # splatting each pixel's mu x area over bins of width coarse_bin gives line integrals per bin
        splat = _interp_matrix(xs_c, ys_c, coarse_angles[v0:v1], ncoarse, coarse_bin)
        parts.append((splat.T @ mu_c).reshape(v1 - v0, ncoarse, nz) * (csx * csy / coarse_bin))
    p_coarse = np.concatenate(parts + [parts[0][:1, ::-1]], axis=0)  # theta = pi mirrors theta = 0
    n0_slice, n0_view = _tube_current(p_coarse, coarse_bin, scanner)

    # Fewer simulated views than the scanner has, each with the photons of the views it stands for: the
    # FBP noise variance depends on the photons per rotation, not on how they are split into views; fewer
    # views only coarsen the texture far from the centre. (Back-projection costs pixels x views.)
    views = min(int(scanner.views), SIMULATED_VIEWS)
    angles = np.arange(views) * (math.pi / views)
    nfft, response = _kernel_response(nbins, bin_mm, KERNELS[scanner.kernel])
    response = response.astype(np.float32)[None, :, None]
    n0 = photons_per_mm * bin_mm * int(scanner.views) / views
    e2 = float(scanner.electronic_noise) ** 2 * int(scanner.views) / views
    s_idx = np.clip(_centres(nbins, bin_mm) / coarse_bin + (ncoarse - 1) / 2.0, 0.0, ncoarse - 1.000001)
    s0 = np.floor(s_idx).astype(np.int64)
    ws = (s_idx - s0).astype(np.float32)[None, :, None]
    xs, ys = _centres(nx, sx), _centres(ny, sy)
    noise = np.zeros((nx * ny, nz), dtype=np.float64)
    for v0, v1 in _view_chunks(views, nx * ny):
        ang = angles[v0:v1]
        # clean line integrals at the fine bins: bilinear in (angle, bin) on the coarse sinogram
        va = ang / (math.pi / COARSE_VIEWS)
        a0 = np.minimum(np.floor(va).astype(np.int64), COARSE_VIEWS - 1)
        wa = (va - a0).astype(np.float32)[:, None, None]
        pa, pb = p_coarse[a0], p_coarse[a0 + 1]
        p = (1.0 - wa) * (pa[:, s0] + (pa[:, s0 + 1] - pa[:, s0]) * ws) + wa * (pb[:, s0] + (pb[:, s0 + 1] - pb[:, s0]) * ws)
        wv = n0_view[a0] * (1.0 - wa[:, :, 0]) + n0_view[a0 + 1] * wa[:, :, 0]  # (views, slices)
        expected = (n0 * n0_slice)[None, None, :] * wv[:, None, :] * np.exp(-p)
        z = rng.standard_normal(expected.shape, dtype=np.float32)
        counts = np.maximum(expected + np.sqrt(expected + e2) * z, 1.0)
        dp = np.log(expected / counts)  # noisy minus clean line integrals
        q = sfft.irfft(sfft.rfft(dp, n=nfft, axis=1) * response, n=nfft, axis=1)[:, :nbins]
        noise += _interp_matrix(xs, ys, ang, nbins, bin_mm) @ q.reshape(len(ang) * nbins, nz)
    noise *= math.pi / views  # the FBP sum over views approximates an integral over [0, pi)
    return (noise / MU_WATER_PER_MM * 1000.0).T.reshape(nz, ny, nx)


def _tube_current(p_coarse: np.ndarray, coarse_bin: float, scanner: Scanner) -> tuple[np.ndarray, np.ndarray]:
    """Relative tube current from the clean coarse sinogram (COARSE_VIEWS + 1, bins, slices), as the
    exposure control sees the patient: per slice (slices,) and per coarse view (views + 1, slices), the
    latter with mean 1 over a rotation."""
    nz = p_coarse.shape[2]
    # every view's projection integrates mu over the slice: the water-equivalent area, as a localiser
    # measures it (the couch included, as there)
    area = p_coarse[:-1].sum(axis=1).mean(axis=0) * coarse_bin / MU_WATER_PER_MM
    diameter = 2.0 * np.sqrt(np.maximum(area, 0.0) / math.pi)
    per_slice = np.exp(float(scanner.exposure_control) * MU_WATER_PER_MM * (diameter - REFERENCE_WATER_DIAMETER_MM))
    if not scanner.angular_modulation:
        return per_slice, np.ones((p_coarse.shape[0], nz))
    per_view = np.exp(0.5 * p_coarse.max(axis=1))  # sqrt of the largest attenuation along each view
    return per_slice, per_view / per_view[:-1].mean(axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# Measured noise
# ---------------------------------------------------------------------------------------------------


def measure_noise_hu(clean: sitk.Image, noisy: sitk.Image, *, soft_tissue_hu=(-50.0, 250.0), erode_mm: float = 3.0) -> float:
    """SD (HU) of ``noisy - clean`` inside the clean image's soft tissue (organs and muscle: HU in
    ``soft_tissue_hu``, neither fat nor bone), eroded in-plane by ``erode_mm`` so that the noise next to
    bone and air does not count; NaN when no soft tissue is left. This is the noise a scan shows, measured
    rather than assumed from the dose."""
    a = sitk.GetArrayFromImage(clean).astype(np.float64)
    b = sitk.GetArrayFromImage(noisy).astype(np.float64)
    if a.shape != b.shape:
        raise InputError(f"clean and noisy images differ in size: {a.shape} against {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    sx, sy = clean.GetSpacing()[:2]
    tissue = (a >= soft_tissue_hu[0]) & (a <= soft_tissue_hu[1])
    ry, rx = max(int(round(erode_mm / sy)), 0), max(int(round(erode_mm / sx)), 0)
    if ry or rx:
        structure = np.zeros((1, 2 * ry + 1, 2 * rx + 1), dtype=bool)
        yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
        structure[0] = (yy / max(ry, 1)) ** 2 + (xx / max(rx, 1)) ** 2 <= 1.0
        tissue = ndimage.binary_erosion(tissue, structure=structure)
    if tissue.sum() < 2:
        return float("nan")
    return float((b - a)[tissue].std())
