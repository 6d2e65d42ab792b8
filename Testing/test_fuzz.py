"""Fuzzing the readers: truncated files, flipped bits in headers and data, random bytes and overwritten
chunks, for every format read_ct and read_label_map accept and for a DICOM folder. Whatever the bytes,
the readers return a 3D image or raise InputError naming the file: no RuntimeError from SimpleITK, no
UnicodeDecodeError, no crash. The example counts keep the whole file under about 30 s."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from MedDiffFMLogic import ctio
from MedDiffFMLogic.errors import InputError
from test_ctio import write_dicom_series

FORMATS = [(".nii", False), (".nii.gz", False), (".nrrd", False), (".nrrd", True), (".mha", False), (".mha", True)]
HEADER_BYTES = 600  # every header of these small files lies within this


def _ct() -> sitk.Image:
    rng = np.random.default_rng(0)
    array = np.where(rng.random((6, 7, 8)) < 0.3, -1000.0, rng.normal(40, 30, (6, 7, 8))).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    return image


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("seeds")
    out = {}
    for ext, compress in FORMATS:
        path = folder / f"ct{ext}"
        sitk.WriteImage(_ct(), str(path), useCompression=compress)
        out[f"{ext}{'+gz' if compress else ''}"] = path.read_bytes()
    return out


@st.composite
def mutated(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip header", "flip anywhere", "overwrite", "random", "append"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind.startswith("flip"):
        out = bytearray(data)
        end = min(len(out), HEADER_BYTES) if kind == "flip header" else len(out)
        for offset, bit in draw(st.lists(st.tuples(st.integers(0, end - 1), st.integers(0, 7)), min_size=1, max_size=6)):
            out[offset] ^= 1 << bit
        return bytes(out)
    if kind == "overwrite":
        offset = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        return data[:offset] + chunk + data[offset + len(chunk):]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=256))
    return draw(st.binary(min_size=0, max_size=2048))


def _check_readers(path: Path) -> None:
    """Each reader returns a 3D image or raises InputError naming the path; anything else propagates."""
    for read in (ctio.read_ct, ctio.read_label_map):
        try:
            image = read(path)
        except InputError as error:
            assert str(path) in str(error) or os.path.basename(str(path)) in str(error), str(error)
        else:
            assert isinstance(image, sitk.Image) and image.GetDimension() == 3
            geometry = [*image.GetSpacing(), *image.GetOrigin(), *image.GetDirection()]
            assert np.isfinite(geometry).all() and min(image.GetSpacing()) > 0, geometry


@pytest.mark.parametrize("name", [f"{e}{'+gz' if c else ''}" for e, c in FORMATS])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_give_an_image_or_an_input_error(seeds, name, data):
    content = data.draw(mutated(seeds[name]), label="content")
    ext = name.split("+")[0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"scan{ext}"
        path.write_bytes(content)
        _check_readers(path)


@pytest.fixture(scope="module")
def dicom_seed(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "series"
    write_dicom_series(folder, _ct(), "1.2.826.0.1.3680043.2.1125.99")
    return folder


# GDCM takes seconds to scan a folder with some corrupt files: fewer examples here.
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_a_dicom_folder_with_a_mutated_slice_gives_an_image_or_an_input_error(dicom_seed, data):
    names = sorted(p.name for p in dicom_seed.iterdir())
    victim = data.draw(st.sampled_from(names), label="slice")
    content = data.draw(mutated((dicom_seed / victim).read_bytes()), label="content")
    with tempfile.TemporaryDirectory() as folder:
        series = Path(folder) / "series"
        shutil.copytree(dicom_seed, series)
        (series / victim).write_bytes(content)
        _check_readers(series)


# ------------------------------------------------------------------------------- cases the fuzzing found


def test_a_nan_in_a_nifti_sform_is_refused_not_passed_on(tmp_path):
    # ITK reads it with a NaN direction, which breaks every resampling later.
    path = tmp_path / "ct.nii"
    sitk.WriteImage(_ct(), str(path))
    header = bytearray(path.read_bytes())
    header[280:284] = struct.pack("<f", float("nan"))  # srow_x[0]
    path.write_bytes(header)
    with pytest.raises(InputError, match="geometry is invalid.*header is corrupt"):
        ctio.read_ct(path)


@pytest.mark.parametrize("position", [b"1e999\\1\\1", b"-10\\20"])
def test_an_infinite_or_short_dicom_slice_position_is_refused(tmp_path, position):
    # 1e999 parses as inf: ImageSeriesReader then returned an image with NaN spacing. Two numbers
    # instead of three made numpy raise a bare ValueError.
    write_dicom_series(tmp_path, _ct(), "1.2.826.0.1.3680043.2.1125.98")
    path = tmp_path / "im0002.dcm"
    data = path.read_bytes()
    value = b"-10\\20\\35 "  # ImagePositionPatient as write_dicom_series stores it (padded to even)
    assert data.count(value) == 1
    path.write_bytes(data.replace(value, position.ljust(len(value)) if len(position) <= len(value) else position))
    with pytest.raises(InputError, match="im0002.dcm: malformed ImagePositionPatient"):
        ctio.read_ct(tmp_path)


def _mha(tmp_path: Path, compress: bool) -> tuple[Path, bytes, int]:
    """A MetaImage file, its bytes, and where its data begin (after the ElementDataFile line)."""
    path = tmp_path / "ct.mha"
    sitk.WriteImage(_ct(), str(path), useCompression=compress)
    data = path.read_bytes()
    return path, data, data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


def test_a_damaged_compressed_metaimage_is_refused_before_itk_reads_it(tmp_path):
    # Five bytes overwritten just inside the zlib stream: ITK's MetaIO then looped for ever.
    path, data, start = _mha(tmp_path, compress=True)
    path.write_bytes(data[:start + 1] + bytes([0x7D, 0x8F, 0xD9, 0x90, 0x1C]) + data[start + 6:])
    with pytest.raises(InputError, match="could not read the MetaImage, its compressed data are corrupt"):
        ctio.read_ct(path)
    # A cut-off stream, and a header declaring fewer voxels than the stream holds.
    path.write_bytes(data[: start + (len(data) - start) // 2])
    with pytest.raises(InputError, match="could not read the MetaImage"):
        ctio.read_ct(path)
    path.write_bytes(data.replace(b"DimSize = 8 7 6", b"DimSize = 8 7 5"))
    with pytest.raises(InputError, match="more than 672 bytes where its header declares 560"):
        ctio.read_ct(path)


@pytest.mark.parametrize("compress", [False, True])
def test_a_metaimage_header_line_of_binary_garbage_is_refused(tmp_path, compress):
    # The newline after ElementDataFile flipped: MetaIO read the binary data as the data file's name
    # and overflowed a buffer (heap corruption, a crash later in the process).
    path, data, start = _mha(tmp_path, compress)
    path.write_bytes(data[: start - 1] + b"J" + data[start:])
    with pytest.raises(InputError, match="its header is corrupt"):
        ctio.read_ct(path)
    # A '=' turned into '-' (and more flips): MetaIO crashed the process with a corrupted heap.
    path.write_bytes(data.replace(b"BinaryDataByteOrderMSB = False", b"BinaryDataByteOrderMSB - False"))
    with pytest.raises(InputError, match="line 4 is not 'name = value'"):
        ctio.read_ct(path)


@pytest.mark.parametrize(("field", "value"), [(b"Offset", b"nan 0 0"), (b"ElementSpacing", b"1 inf 1"),
                                              (b"TransformMatrix", b"1 0 0 0 1 0 0 0 x")])
def test_a_metaimage_with_non_finite_geometry_is_refused(tmp_path, field, value):
    # ITK reads a NaN offset as 0 without a word: the image would silently move.
    path, data, _ = _mha(tmp_path, compress=False)
    line = next(row for row in data.split(b"\n") if row.startswith(field + b" ="))
    path.write_bytes(data.replace(line, field + b" = " + value))
    with pytest.raises(InputError, match=f"its header is corrupt \\({field.decode()} "):
        ctio.read_ct(path)
