"""CT input and output with geometry.

SimpleITK images are the engine's single geometry convention: spacing, origin and direction travel with
the voxels, in ITK's LPS world frame. Arrays taken from them are (z, y, x).

Geometry round-trip tolerances (measured with SimpleITK 2.5 / ITK 5.4, asserted in Testing/test_ctio.py):
- NRRD (.nrrd) and MetaImage (.mha): exact to ~1e-15 (NRRD stores direction*spacing as %.17g text and the
  reader takes column norms back apart); we assert 1e-12.
- NIfTI (.nii, .nii.gz): the header stores pixdim, the quaternion and the sform as float32, so every
  number comes back rounded to float32: spacing and origin to a relative 2**-24 (about 6e-8; 2e-5 mm
  for an origin at 300 mm), direction cosines to about 1e-7. We assert spacing and origin to a relative
  1e-6 (origin relative to max(1 mm, |origin|)) and direction to 1e-6 absolute.

The parts: formats.py (formats, paths, byte-level header checks), reading.py (CT and label maps, the
plausible-HU check: see its docstring), writing.py (atomic writes), arrays.py (image <-> array) and
resampling.py. Import them from here.
"""

from __future__ import annotations

import os  # noqa: F401 (tests patch ctio.os.access)

from .arrays import from_array, to_array
from .formats import READ_FORMATS, WRITE_FORMATS, same_path
from .reading import HU_LIMIT, HU_NO_TISSUE_BELOW, allow_unusual_hu, read_ct, read_label_map, unusual_hu
from .resampling import INTERPOLATORS, resample_onto, resample_to_spacing, same_grid
from .writing import write_image

__all__ = [
    "HU_LIMIT", "HU_NO_TISSUE_BELOW", "INTERPOLATORS", "READ_FORMATS", "WRITE_FORMATS", "allow_unusual_hu",
    "from_array", "read_ct", "read_label_map", "resample_onto", "resample_to_spacing", "same_grid", "same_path",
    "to_array", "unusual_hu", "write_image",
]
