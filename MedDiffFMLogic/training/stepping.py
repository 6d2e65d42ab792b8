"""What a training step is made of, apart from the Trainer: the process layout under torchrun, each
sample's noise, timestep and condition dropout drawn from its own seed, the micro-batch built ahead of
the step (in a DataLoader worker or inline), and the signals that stop a run after its current step."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

import torch
import torch.utils.data

from ..errors import Interrupted
from .data import Sample, TrainingData, collate
from .objective import apply_dropout


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def draw_noise(seeds: list[int], shape: tuple[int, ...], timesteps: int, dropout: float):
    """Per sample, from its own seed: condition keep flags (3), a timestep and the noise. Drawn on the
    CPU, so a seed gives the same values on every device and in every process layout."""
    keeps, ts, noises = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        keeps.append(torch.rand(3, generator=g) >= dropout)
        ts.append(torch.randint(0, timesteps, (1,), generator=g))
        noises.append(torch.randn(shape, generator=g))
    return torch.stack(keeps), torch.cat(ts), torch.stack(noises)


def prepare_batch(samples: list[tuple[Sample, int]], dropout: float, timesteps: int):
    """A micro-batch ready for the network: (batch with conditions dropped, noise, timesteps). Runs in a
    DataLoader worker when num_workers > 0, inline otherwise; the values depend only on the samples' seeds."""
    batch = collate([s for s, _ in samples])
    keep, ts, noise = draw_noise([seed for _, seed in samples], tuple(batch.image.shape[1:]), timesteps, dropout)
    if dropout > 0:
        batch = apply_dropout(batch, keep[:, 0], keep[:, 1], keep[:, 2])
    return batch, noise, ts


def quiet_worker(_: int) -> None:
    # Ctrl+C reaches the whole process group: the workers must live on while the main process finishes
    # its step and saves a checkpoint (it ends them afterwards).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopSignals:
    """While training: SIGINT or SIGTERM asks the loop to stop after the current step (which then saves a
    checkpoint); a second signal stops at once. Handlers can only be set in the main thread; elsewhere
    signals keep their usual effect."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now, without waiting for the step
            signal.signal(signum, signal.SIG_IGN)
            raise Interrupted(signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class SampleStream(torch.utils.data.Dataset):
    """Training sample g, for DataLoader workers."""

    def __init__(self, data: TrainingData):
        self.data = data

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, g: int):
        return self.data.sample(int(g))
