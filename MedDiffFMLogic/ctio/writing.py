"""Writing images atomically: nothing appears at the target path until the file is whole."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from .formats import WRITE_FORMATS, _extension, _itk_reason, _path


def write_image(image: sitk.Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write image atomically to .nii, .nii.gz, .nrrd or .mha and return the path.

    The data go to a hidden temporary file in the target folder, which is renamed over the target only
    when SimpleITK has finished; on failure nothing appears at path. compress gzips NRRD and MHA
    (.nii is never compressed, .nii.gz always is).
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"write_image needs a SimpleITK image, not {type(image).__name__}")
    p = _path(path)
    ext = _extension(p)
    if ext not in WRITE_FORMATS or p.name.lower() == ext:
        raise InputError(
            f"{p}: cannot write {ext or 'a file without an extension'}; "
            f"use one of {', '.join(WRITE_FORMATS)}"
        )
    folder = p.parent.resolve()
    if not folder.is_dir():
        raise InputError(f"{p}: the output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{p}: the output folder {folder} is not writable; choose another output path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give an output file name ending in {ext}")
    stem = p.name[: -len(ext)]
    temporary = folder / f".{stem}.tmp-{secrets.token_hex(6)}{ext}"
    try:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
        os.replace(temporary, p)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (RuntimeError, OSError)):
            reason = _itk_reason(error) if isinstance(error, RuntimeError) else str(error)
            raise InputError(f"{p}: could not write the image: {reason}") from error
        raise
    return p
