"""Errors a user may see. Each names the problem and what to do about it."""


class MedDiffFMError(Exception):
    """A problem with the user's input, settings or files; the CLI prints its message, not a traceback."""


class InputError(MedDiffFMError):
    """An input image, mask or path is unusable."""


class ModelFileError(MedDiffFMError):
    """A model file is missing, corrupt, tampered with, unsafe or made for another architecture."""
