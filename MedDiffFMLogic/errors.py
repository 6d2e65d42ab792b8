"""Errors a user may see. Each names the problem and what to do about it."""


class MedDiffFMError(Exception):
    """A problem with the user's input, settings or files; the CLI prints its message, not a traceback."""


class InputError(MedDiffFMError, ValueError):
    """An input image, mask, path or setting is unusable (a ValueError too, for library callers)."""


class ModelFileError(MedDiffFMError):
    """A model file is missing, corrupt, tampered with, unsafe or made for another architecture."""


class ResourceError(MedDiffFMError):
    """The run does not fit the machine's memory at the chosen settings; the message names the knob."""


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGTERM: `kill`, Slicer's Cancel). A KeyboardInterrupt, so
    every cleanup that handles Ctrl+C (temporary files) handles it too; `signum` gives the exit code."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
