"""Checkpoints without pickle: tensors (trainable weights, EMA weights, optimizer state) in safetensors
files, everything else (step, optimizer hyper-parameters, gradient-scaler state, config) in JSON.

Layout: <output>/checkpoints/step-000123/{weights,ema,optimizer}.safetensors + state.json. A checkpoint
is written to a temporary folder, flushed to disk and renamed into place, so neither a crash nor a power
cut leaves half of one under a checkpoint's name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError

FORMAT = "meddifffm-checkpoint/1"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors ('<param index>.<name>') and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in rest["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _sync(path: Path) -> None:
    """Flush a file or folder entry to disk (a rename is durable only once both are)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. folders cannot be opened on Windows; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(folder: Path, step: int, weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, extra: dict[str, Any], keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cpu = lambda d: {k: v.detach().cpu().contiguous() for k, v in d.items()}  # noqa: E731
    save_file(cpu(weights), str(tmp / "weights.safetensors"))
    save_file(cpu(ema), str(tmp / "ema.safetensors"))
    opt_tensors, opt_rest = optimizer_tensors(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    state = {"format": FORMAT, "step": step, "optimizer": opt_rest, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    for path in (*tmp.iterdir(), tmp):
        _sync(path)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _sync(folder)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / "state.json").is_file())


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, weights, ema, optimizer tensors) of a checkpoint folder."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"checkpoint {path} is unreadable: {exc}") from exc
    if state.get("format") != FORMAT:
        raise InputError(f"{path} is not a MedDiffFM checkpoint")
    tensors = [load_file(str(path / f"{n}.safetensors")) for n in ("weights", "ema", "optimizer")]
    return state, *tensors
