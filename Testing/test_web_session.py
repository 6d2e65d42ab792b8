"""The web app's scene logic without a browser (MedDiffFMWeb.session on trame-slicer's SlicerApp):
opening NIfTI, NRRD, MHA and a DICOM series folder with their geometry, clear errors for what cannot be
opened, masks on the input's grid, and downloads that read back as the node."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedDiffFMWeb.session import Session, SessionError

from trame_slicer.core import SlicerApp  # noqa: E402  (after MedDiffFMWeb, which finds MedDiffFMLib)
from MedDiffFMLib import bridge  # noqa: E402


def ct_image(shape=(6, 10, 12)) -> sitk.Image:
    """A small CT-like int16 volume with anisotropic spacing, an offset origin and a known pattern."""
    k, j, i = np.indices(shape)
    array = (-1000 + 40 * i + 7 * j + 300 * k).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.0, 5.0))
    return image


def lps_to_ras_ijk(image: sitk.Image) -> np.ndarray:
    """The IJK-to-RAS matrix Slicer must give a volume read from this (LPS) image."""
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag([-1, -1, 1]) @ direction
    matrix[:3, 3] = np.diag([-1, -1, 1]) @ np.array(image.GetOrigin())
    return matrix


def write_dicom_series(image: sitk.Image, folder) -> None:
    """One CT slice per file with the tags a reader sorts and places them by."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.99"
    direction = image.GetDirection()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0060": "CT", "0020|000d": series + ".0",
            "0020|000e": series, "0020|0011": "1", "0020|0013": str(z + 1),
            "0008|0018": f"{series}.{z + 1}",
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                         direction[1], direction[4], direction[7])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1052": "0", "0028|1053": "1",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


@pytest.fixture
def session(tmp_path):
    return Session(SlicerApp(), temp_root=str(tmp_path))


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mha"])
def test_a_volume_file_opens_with_its_voxels_and_geometry(session, tmp_path, extension):
    image = ct_image()
    path = tmp_path / f"scan{extension}"
    sitk.WriteImage(image, str(path))
    node = session.open_path(path)
    assert node.GetName() == "scan" and session.input_node is node
    assert np.array_equal(bridge.voxels(node), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(bridge.ijk_to_ras(node), lps_to_ras_ijk(image), atol=1e-5)
    assert session.describe()["input"] == node.GetID()


def test_a_dicom_folder_opens_as_one_volume(session, tmp_path):
    image = ct_image()
    folder = tmp_path / "series"
    folder.mkdir()
    write_dicom_series(image, folder)
    node = session.open_path(folder)
    assert bridge.dimensions(node) == image.GetSize()
    assert np.array_equal(bridge.voxels(node), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(bridge.ijk_to_ras(node), lps_to_ras_ijk(image), atol=1e-4)


def test_what_cannot_be_opened_says_what_to_do(session, tmp_path):
    with pytest.raises(SessionError, match="does not exist on the server"):
        session.open_path(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SessionError, match="holds no files"):
        session.open_path(tmp_path / "empty")
    with pytest.raises(SessionError, match="type the path"):
        session.open_path("")
    with pytest.raises(SessionError, match="open a CT first"):
        session.new_mask()
    assert session.input_node is None and not session.volumes()


def test_a_mask_lies_on_the_input_grid_and_a_task_needs_it(session, tmp_path):
    from MedDiffFMLib.tasks import TaskParameters

    sitk.WriteImage(ct_image(), str(tmp_path / "scan.nrrd"))
    ct = session.open_path(tmp_path / "scan.nrrd")
    with pytest.raises(SessionError, match="needs a lesion mask"):
        session.start("lesion", TaskParameters())
    mask = session.new_mask()
    assert mask.GetName() == "scan mask" and session.mask_reference(mask) is ct
    [entry] = session.describe()["segmentations"]
    assert entry["segments"] == [{"id": session.first_segment(mask), "name": "lesion", "voxels": 0}]
    assert session.job is None


def test_a_download_reads_back_as_the_node(session, tmp_path):
    image = ct_image()
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    node = session.open_path(tmp_path / "scan.nii.gz")
    filename, data = session.export(node.GetID())
    assert filename == "scan.nrrd"
    (tmp_path / filename).write_bytes(data)
    back = sitk.ReadImage(str(tmp_path / filename))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    with pytest.raises(SessionError, match="no volume or segmentation"):
        session.export("vtkMRMLScalarVolumeNode999")


def test_the_page_defaults_are_the_engines():
    # the panels start where the engine and the Slicer module do (region auto, not a hard-coded chest)
    from MedDiffFMLib.tasks import TaskParameters
    from MedDiffFMWeb import app

    defaults = TaskParameters()
    assert {k: v for k, v in app.CHOICE_FIELDS.items() if k != "preset"} == {
        "region": defaults.region, "device": defaults.device, "precision": defaults.precision}
    assert defaults.region == "auto"
    for field, kind, default in app.NUMBER_FIELDS.values():
        assert default == kind(getattr(defaults, field) or 0), field
