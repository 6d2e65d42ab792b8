"""The commands made of declarations, in the order `meddifffm --help` lists them. A new task adds its
settings module here."""

from __future__ import annotations

from . import anomaly, demo, denoise, inpaint, lesion, superres, synthesize

COMMANDS = tuple(m.COMMAND for m in (denoise, anomaly, inpaint, lesion, superres, synthesize, demo))
