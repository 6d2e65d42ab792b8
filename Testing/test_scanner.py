"""The CT scanner model (phantoms.scanner): FBP of Poisson projection noise with a fixed physical geometry."""

import numpy as np
import pytest
import SimpleITK as sitk

from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.phantoms.scanner import Scanner, measure_noise_hu, simulate_low_dose


def arr(image):
    return sitk.GetArrayFromImage(image)


def water_slices(n, pixel, a_mm, b_mm, slices=1, thickness=1.0, rods=(), rod_hu=2000.0):
    """A water ellipse (semi-axes a along x, b along y) in air, with optional bone rods (x, y, r) in mm."""
    c = (np.arange(n) - (n - 1) / 2.0) * pixel
    yy, xx = np.meshgrid(c, c, indexing="ij")
    sl = np.where((xx / a_mm) ** 2 + (yy / b_mm) ** 2 <= 1.0, 0.0, -1000.0)
    for x0, y0, r in rods:
        sl[(xx - x0) ** 2 + (yy - y0) ** 2 <= r * r] = rod_hu
    image = sitk.GetImageFromArray(np.repeat(sl[None], slices, axis=0).astype(np.float32))
    image.SetSpacing((pixel, pixel, thickness))
    return image, xx, yy


def centre_noise(image, noisy, xx, yy, radius_mm=30.0):
    d = arr(noisy) - arr(image)
    return float(d[:, xx**2 + yy**2 <= radius_mm**2].std())


def test_noise_grows_like_inverse_sqrt_dose():
    image, xx, yy = water_slices(96, 3.0, 100.0, 75.0)
    sd = {dose: centre_noise(image, simulate_low_dose(image, dose, seed=1), xx, yy, 50.0) for dose in (1.0, 0.25, 0.1)}
    assert sd[0.1] > sd[0.25] > sd[1.0] > 0
    # 2 and 3.16; a little more at the lowest dose, where the electronic noise starts to count
    assert 1.8 <= sd[0.25] / sd[1.0] <= 2.3, sd
    assert 2.9 <= sd[0.1] / sd[1.0] <= 3.8, sd


def test_noise_depends_on_slice_thickness_not_on_pixel_size():
    # A scanner's kernel, not the pixel, sets the resolution: the same body at 0.75 mm and at 3 mm pixels
    # shows the same noise; four times the slice thickness halves it.
    fine, xf, yf = water_slices(256, 0.75, 90.0, 80.0)
    coarse, xc, yc = water_slices(64, 3.0, 90.0, 80.0)
    thick, _, _ = water_slices(64, 3.0, 90.0, 80.0, thickness=4.0)
    sd_fine = centre_noise(fine, simulate_low_dose(fine, 0.25, seed=2), xf, yf)
    sd_coarse = centre_noise(coarse, simulate_low_dose(coarse, 0.25, seed=2), xc, yc, 60.0)
    sd_thick = centre_noise(thick, simulate_low_dose(thick, 0.25, seed=2), xc, yc, 60.0)
    assert 0.8 <= sd_coarse / sd_fine <= 1.25, (sd_fine, sd_coarse)
    assert 1.7 <= sd_coarse / sd_thick <= 2.3, (sd_coarse, sd_thick)
    # the 2D default thickness is 1 mm; an explicit one overrides it
    flat = fine[:, :, 0]
    sd_flat = centre_noise(fine, sitk.JoinSeries(simulate_low_dose(flat, 0.25, seed=2)), xf, yf)
    assert 0.8 <= sd_flat / sd_fine <= 1.25


def test_noise_is_correlated_in_plane():
    image, xx, yy = water_slices(256, 0.75, 90.0, 80.0)
    noise = (arr(simulate_low_dose(image, 0.25, seed=3)) - arr(image))[0]
    inside = xx**2 + yy**2 <= 50.0**2
    pairs = inside[:, :-1] & inside[:, 1:]
    rho_x = np.corrcoef(noise[:, :-1][pairs], noise[:, 1:][pairs])[0, 1]
    pairs = inside[:-1] & inside[1:]
    rho_y = np.corrcoef(noise[:-1][pairs], noise[1:][pairs])[0, 1]
    # FBP with a soft-tissue kernel: neighbouring 0.75 mm pixels share most of their noise
    assert rho_x > 0.3 and rho_y > 0.3, (rho_x, rho_y)


def test_more_noise_through_a_wider_body_and_behind_bone():
    narrow, xn, yn = water_slices(128, 3.0, 100.0, 100.0)
    wide, xw, yw = water_slices(128, 3.0, 180.0, 100.0)
    sd_narrow = centre_noise(narrow, simulate_low_dose(narrow, 0.25, seed=4), xn, yn)
    sd_wide = centre_noise(wide, simulate_low_dose(wide, 0.25, seed=4), xw, yw)
    assert sd_wide > 1.3 * sd_narrow, (sd_narrow, sd_wide)
    # two dense rods left and right: the rays between them are attenuated more, so the noise is higher on
    # the line joining them than at the same distance from the centre above it (streaks along that line)
    # (with a fixed tube current; the angular modulation gives those views more photons and weakens them)
    bone, xb, yb = water_slices(96, 2.0, 80.0, 80.0, slices=16, rods=((-45.0, 0.0, 15.0), (45.0, 0.0, 15.0)))
    between = (np.abs(yb) <= 3.0) & (np.abs(xb) <= 20.0)
    above = (np.abs(xb) <= 3.0) & (np.abs(yb) <= 20.0)
    streak = {}
    for on in (False, True):
        noise = arr(simulate_low_dose(bone, 0.25, seed=5, scanner=Scanner(angular_modulation=on))) - arr(bone)
        streak[on] = noise[:, between].std() / noise[:, above].std()
    assert streak[False] > 1.12, streak
    assert streak[True] < streak[False] - 0.05, streak


def test_geometry_kept_input_unchanged_same_seed_same_bytes():
    image, _, _ = water_slices(48, 2.0, 40.0, 30.0, slices=3, thickness=2.5)
    image.SetSpacing((2.0, 1.5, 2.5))  # anisotropic in-plane
    image.SetOrigin((10.0, -5.0, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    before = arr(image).copy()
    a = simulate_low_dose(image, 0.25, seed=7)
    b = simulate_low_dose(image, 0.25, seed=7)
    c = simulate_low_dose(image, 0.25, seed=8)
    assert a.GetPixelID() == sitk.sitkFloat32
    assert a.GetSize() == image.GetSize()
    assert np.allclose(a.GetSpacing(), image.GetSpacing())
    assert np.allclose(a.GetOrigin(), image.GetOrigin())
    assert np.allclose(a.GetDirection(), image.GetDirection())
    assert np.array_equal(arr(image), before), "the input image was modified"
    assert arr(a).tobytes() == arr(b).tobytes()
    assert not np.array_equal(arr(a), arr(c))
    # the noise has no bias: the mean of the body stays where it was
    body = before > -500
    assert abs(float((arr(a) - before)[body].mean())) < 5.0


def test_exposure_control_sets_the_dose_by_patient_size():
    # water cylinders 200 and 320 mm across: with a fixed tube current the big one is much noisier; the
    # constant-noise setting evens them out; the default (0.5) lies between
    sd = {}
    for strength in (0.0, 0.5, 1.0):
        scanner = Scanner(exposure_control=strength, angular_modulation=False)
        for d in (200.0, 320.0):
            image, xx, yy = water_slices(128, 3.0, d / 2, d / 2)
            sd[strength, d] = centre_noise(image, simulate_low_dose(image, 0.25, seed=6, scanner=scanner), xx, yy)
    ratio = {k: sd[k, 320.0] / sd[k, 200.0] for k in (0.0, 0.5, 1.0)}
    assert ratio[0.0] > 2.5, ratio  # exp(mu x 120 mm / 2) = 3.2
    assert 0.85 <= ratio[1.0] <= 1.2, ratio
    assert 1.3 < ratio[0.5] < ratio[0.0] - 0.5, ratio
    # the reference patient's dose does not depend on the strength
    image, xx, yy = water_slices(128, 3.0, 140.0, 140.0)  # 280 mm: the reference water-equivalent diameter
    ref = [centre_noise(image, simulate_low_dose(image, 0.25, seed=6, scanner=Scanner(exposure_control=k)), xx, yy)
           for k in (0.0, 1.0)]
    assert 0.93 <= ref[0] / ref[1] <= 1.07, ref


def test_angular_modulation_lowers_the_noise_of_a_wide_body_at_the_same_dose():
    # mA ~ sqrt(attenuation) per view: in a 360 x 160 mm ellipse the lateral views get more photons, the
    # anterior ones fewer, and the noise at the centre falls; a round body is left as it was (the photons
    # per rotation are kept)
    sd = {}
    for shape, (a, b) in {"wide": (180.0, 80.0), "round": (110.0, 110.0)}.items():
        image, xx, yy = water_slices(128, 3.0, a, b)
        for on in (False, True):
            scanner = Scanner(angular_modulation=on)
            sd[shape, on] = centre_noise(image, simulate_low_dose(image, 0.25, seed=9, scanner=scanner), xx, yy)
    assert sd["wide", True] < 0.85 * sd["wide", False], sd
    assert 0.95 <= sd["round", True] / sd["round", False] <= 1.05, sd


def test_abdomen_at_1mm_quarter_dose_noise_is_clinical():
    # The calibration target (seeds/scanner.md): an adult-size 1 mm abdomen shows 10-15 HU at full dose,
    # a quarter dose about twice that; measured in soft tissue, not assumed.
    phantom = make_phantom(PhantomConfig(region="abdomen", size=(420, 420, 8), spacing=(1.0, 1.0, 1.0), seed=0,
                                         patient_scale=1.0))
    full = measure_noise_hu(phantom.image, simulate_low_dose(phantom.image, 1.0, seed=1))
    quarter = measure_noise_hu(phantom.image, simulate_low_dose(phantom.image, 0.25, seed=1))
    assert 20.0 <= quarter <= 35.0, (full, quarter)
    assert 10.0 <= full <= 15.0, (full, quarter)


def test_measure_noise_hu_reads_the_difference_in_soft_tissue():
    clean = np.full((4, 40, 40), 40.0, dtype=np.float32)
    clean[:, :, :10] = 1000.0  # bone: its noise must not count
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0.0, 10.0, clean.shape).astype(np.float32)
    noisy[:, :, :12] += rng.normal(0.0, 200.0, (4, 40, 12)).astype(np.float32)
    a, b = sitk.GetImageFromArray(clean), sitk.GetImageFromArray(noisy)
    assert 9.0 <= measure_noise_hu(a, b) <= 11.0
    assert np.isnan(measure_noise_hu(sitk.GetImageFromArray(clean[:, :, :10]), sitk.GetImageFromArray(noisy[:, :, :10])))
    with pytest.raises(InputError):
        measure_noise_hu(a, sitk.GetImageFromArray(noisy[:, :20]))


def test_bad_inputs_raise_input_error():
    img = sitk.Image(16, 16, 4, sitk.sitkFloat32)
    for kwargs in ({"dose_fraction": 0.0}, {"full_dose_photons": -1.0}, {"slice_thickness_mm": 0.0}):
        with pytest.raises(InputError):
            simulate_low_dose(img, **{"dose_fraction": 0.5, **kwargs})
    for kwargs in ({"detector_bin_mm": 0.0}, {"views": 4}, {"kernel": "bone+"}, {"electronic_noise": -1.0},
                   {"exposure_control": 1.5}, {"angular_modulation": "yes"}):
        with pytest.raises(InputError):
            Scanner(**kwargs)
    bad = sitk.GetImageFromArray(np.full((2, 8, 8), np.nan, dtype=np.float32))
    with pytest.raises(InputError):
        simulate_low_dose(bad, 0.5)
