"""Cutting whole-body scans into regions with a TotalSegmentator label map."""

import numpy as np
import SimpleITK as sitk

from MedDiffFMLogic import ctio
from MedDiffFMLogic.anatomy import BODY_LABEL, label_index
from MedDiffFMLogic.cli import main
from MedDiffFMLogic.training.manifest import read_manifest
from MedDiffFMLogic.training.regions_cut import region_slices, with_body_label


def _whole_body(flip: bool = False):
    """A 5 mm whole-body label map of 200 slices (1 m): skull and brain at the top, lungs, liver, kidneys,
    hips at the bottom; z index 0 is the feet (LPS: +z towards the head)."""
    lab = np.zeros((200, 16, 16), np.uint8)
    def put(name, z0, z1):
        lab[z0:z1, 6:10, 6:10] = label_index(name)

    put("hip_left", 20, 50)
    put("kidney_left", 60, 80)
    lab[70:110, 10:12, 10:12] = label_index("liver")  # beside the lung, where they overlap in z
    put("lung_upper_lobe_left", 100, 150)
    put("vertebrae_C3", 155, 170)
    put("brain", 175, 198)
    if flip:
        lab = lab[::-1].copy()
    image = sitk.GetImageFromArray(lab)
    image.SetSpacing((2.0, 2.0, 5.0))
    if flip:  # same anatomy stored head first: z axis pointing to the feet
        image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    return image


def test_region_slices_follow_the_landmarks():
    ranges = region_slices(_whole_body())
    # margins of 20 mm = 4 slices
    assert ranges["chest"] == (96, 154)
    assert ranges["abdomen"] == (20, 114)
    assert ranges["head_neck"] == (145, 200)
    flipped = region_slices(_whole_body(flip=True))
    assert flipped["chest"] == (200 - 154, 200 - 96)


def test_body_label_and_cut_command(tmp_path):
    labels = _whole_body()
    hu = np.full(sitk.GetArrayViewFromImage(labels).shape, -1000.0, np.float32)
    hu[:, 3:13, 3:13] = 40.0  # the body
    hu[:, 15, :] = 200.0  # a table, not connected to the body
    ct = sitk.GetImageFromArray(hu)
    ct.CopyInformation(labels)
    body = sitk.GetArrayViewFromImage(with_body_label(ct, labels))
    assert (body[:, 3:13, 3:13] > 0).all() and (body[:, 15] == 0).all()
    assert body[100, 4, 4] == BODY_LABEL and body[120, 7, 7] == label_index("lung_upper_lobe_left")
    ct_path = ctio.write_image(ct, tmp_path / "wb.nii.gz")
    lab_path = ctio.write_image(labels, tmp_path / "wb-labels.nii.gz")
    manifest = tmp_path / "m.csv"
    assert main(["cut-regions", str(ct_path), str(lab_path), "-o", str(tmp_path / "cut"),
                 "--manifest", str(manifest), "--split", "val"]) == 0
    records = read_manifest(manifest)
    assert sorted(r.region for r in records) == ["abdomen", "chest", "head_neck"]
    chest = next(r for r in records if r.region == "chest")
    cut = ctio.read_ct(chest.image)
    assert cut.GetSize() == (16, 16, 154 - 96) and chest.split == "val"
    # the cut keeps the physical position of every voxel
    assert np.allclose(cut.GetOrigin(), ct.TransformIndexToPhysicalPoint((0, 0, 96)))
    # a region dataset's scan is kept whole; its labels gain the body class
    assert main(["cut-regions", str(ct_path), str(lab_path), "-o", str(tmp_path / "whole"), "--region", "chest",
                 "--manifest", str(tmp_path / "r.csv")]) == 0
    (record,) = read_manifest(tmp_path / "r.csv")
    assert record.image == str(ct_path) and record.region == "chest"
    assert (sitk.GetArrayViewFromImage(ctio.read_label_map(record.labels)) == BODY_LABEL).any()
