"""Pretraining and ControlNet fine-tuning: one loop for both, single-process or distributed.

- Objective: L1 between true and predicted noise (objective.py), t uniform, conditions dropped at random.
- Optimiser: Adam at a constant learning rate, gradient accumulation over micro-batches, global
  gradient-norm clipping, EMA of the trained weights (the EMA weights are what gets exported).
- Precision: chosen by what the hardware computes (device.training_precision): bf16 autocast on a CUDA
  GPU with bf16 and on a CPU with AVX512-BF16 or AMX that measures faster in it, fp32 elsewhere (a CPU
  without them emulates bf16, many times slower); fp16 with a gradient scaler on CUDA when asked for.
- Speed on a CPU: one torch thread per core, channels-last-3d weights (oneDNN's faster layout for these
  small-channel 3D convolutions), optionally torch.compile of the loss (fuses the normalisation and
  activation kernels); samples, noise and condition dropout are built ahead of the step by DataLoader
  workers when num_workers > 0. benchmarks/train_speed.py measures each against the earlier step.
- Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (nccl on
  CUDA, gloo on the CPU); gradients are averaged across processes, synchronised once per optimizer
  step (no_sync on the other micro-batches). Every process draws its own samples from the shared
  deterministic stream (data.TrainingData), as DistributedSampler would. Only rank 0 writes files.
- Exact resume: checkpoints hold the trained and EMA weights and the optimizer state (safetensors)
  plus the step (JSON); every sample's data, noise and timestep depend only on (seed, sample index),
  so a resumed run repeats the uninterrupted run's losses (same threads, precision and compile setting).
- Interruption: checkpoints every `checkpoint_every` steps and every `checkpoint_minutes` of wall time;
  SIGINT or SIGTERM lets the current step finish, saves a checkpoint and stops (a second signal stops
  at once); a run folder that holds a run is never silently started over.
- Fine-tuning: the base model is loaded through the catalogue and frozen; a ControlNet made from it
  (zero output convolutions) is trained on the task's control volume (data.py builds it with the
  tasks' conventions).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data
from torch.nn.parallel import DistributedDataParallel

from ..controlnet import ControlledDenoiser, ControlNetConfig, MedDiffFMControlNet
from ..device import resolve_device, training_precision
from ..errors import InputError, Interrupted
from ..modelfiles import BUNDLED_DIR, DEMO_LICENCE, find_model, load_network, save_model
from ..network import MedDiffFMNet
from ..progress import SILENT, Progress
from ..sampling import Conditions, SlidingWindowEstimator, WindowConfig, make_generator, sample, spaced_timesteps
from ..schedules import PAPER_SCHEDULE, alphas_cumprod, make_ddpm
from .checkpoint import list_checkpoints, load_checkpoint, restore_optimizer, save_checkpoint
from .config import TrainConfig, config_from_dict
from .data import TrainingData
from .manifest import read_manifest
from .objective import Batch, epsilon_loss
from .phantomset import make_phantom_set, phantom_set_id
from .runlog import monai_version, plot_losses, read_csv, save_slices
from .stepping import DistInfo, SampleStream, StopSignals, prepare_batch, quiet_worker

PHANTOM_USE = "Demonstration only, not for clinical use: trained on procedural phantoms, not on real CT."
REAL_DATA_USE = "Research only, not for clinical use."
# Settings that shape the training trajectory: a resumed run must keep them.
TRAJECTORY_KEYS = ("network", "data", "task", "base_model", "conditioning_channels", "batch_size", "accumulation",
                   "lr", "betas", "grad_clip", "ema_decay", "condition_dropout", "mixed_precision", "seed")


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return config_from_dict(config).to_dict()
    except InputError:  # a field since removed: compare as written
        return config


def _trajectory(config: dict[str, Any], key: str) -> Any:
    """A trajectory setting as a resume compares it. The network's sampling window is used only when
    sampling, so a long run may take it up between sessions (it goes into the exported card)."""
    value = config.get(key)
    if key == "network" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "sampling_window"}
    return value


# What a run folder holds once a run has started in it (the cache alone is not a run).
RUN_FILES = ("losses.csv", "validation.csv", "config.json", "checkpoints", "samples", "model")


class Trainer:
    def __init__(self, config: TrainConfig, output: str | os.PathLike, *, export_dir: str | os.PathLike | None = None,
                 command: str | None = None, config_file: str | None = None, device: str = "auto",
                 progress: Progress = SILENT):
        self.dist = DistInfo.from_env()
        self.config = config
        self.output = Path(output)
        self.export_dir = Path(export_dir) if export_dir else self.output / "model"
        self.export_named = export_dir is not None  # the export folder was asked for by name
        self.command = command
        self.config_file = config_file
        self.device_choice = device
        self.progress = progress if self.dist.main else SILENT
        self.step = 0
        self.elapsed = 0.0
        self._ready = False

    # ------------------------------------------------------------------------------------- setup

    def setup(self) -> "Trainer":
        if self._ready:
            return self
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self._init_device()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.output.mkdir(parents=True, exist_ok=True)
        self.scheduler = make_ddpm(PAPER_SCHEDULE)
        self._build_model()
        self._load_data()
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
        self.amp_dtype, self.precision_reason = training_precision(self.device, cfg.mixed_precision)
        if cfg.mixed_precision in ("bf16", "fp16") and self.amp_dtype is None:
            warnings.warn(f"mixed_precision {cfg.mixed_precision!r} is not used here: {self.precision_reason}")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ddp = None
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self._loss_fn = torch.compile(epsilon_loss) if cfg.compile else epsilon_loss
        self._compiled_once = False
        self._ready = True
        return self

    @property
    def channels_last(self) -> bool:
        on = self.config.channels_last
        return self.device.type == "cpu" if on is None else bool(on)

    def speed_settings(self) -> dict[str, Any]:
        """How this run computes (for logs, checkpoints and the benchmark)."""
        self.setup()
        threads = self.config.threads or torch.get_num_threads()
        return {"device": self.device.type, "threads": threads, "precision": self.precision_reason,
                "channels_last": self.channels_last, "compile": self.config.compile,
                "data_workers": self.config.num_workers}

    def _init_device(self) -> torch.device:
        device = resolve_device(self.device_choice)
        if self.dist.world > 1:
            if device.type == "cuda":
                torch.cuda.set_device(self.dist.local_rank)
                device = torch.device("cuda", self.dist.local_rank)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def _build_model(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)  # the same seed builds the same initial weights
        if cfg.task is None:
            self.base_card = None
            net = MedDiffFMNet(cfg.network).to(self.device)
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last_3d)
            self.trainable = net
            self.model = net
            self.ema_trainable = copy.deepcopy(net).requires_grad_(False).eval()
            self.ema_model = self.ema_trainable
            return
        base, card = load_network(cfg.base_model, self.device)
        self.base_card, self.base_card_path = card, find_model(cfg.base_model)
        if cfg.name == card.name:
            raise InputError(
                f"the ControlNet would be named {cfg.name!r}, the name of its base model, and one would hide the "
                "other in the model catalogue; give it a name of its own (the config's \"name\", or --name)"
            )
        if tuple(card.working_spacing) != tuple(float(s) for s in cfg.data.spacing):
            raise InputError(
                f"data.spacing {list(cfg.data.spacing)} differs from the base model's working spacing "
                f"{list(card.working_spacing)}; fine-tune on the base model's grid"
            )
        # The ControlNet copies the base's architecture; the config's own network setting does not apply.
        self.config = cfg = dataclasses.replace(cfg, network=base.config)
        base.requires_grad_(False).eval()
        control = MedDiffFMControlNet.from_base(base, ControlNetConfig(
            task=cfg.task, control_channels=1, conditioning_channels=cfg.conditioning_channels)).to(self.device)
        if self.channels_last:
            base = base.to(memory_format=torch.channels_last_3d)
            control = control.to(memory_format=torch.channels_last_3d)
        self.trainable = control
        self.model = ControlledDenoiser(base, control)
        self.ema_trainable = copy.deepcopy(control).requires_grad_(False).eval()
        self.ema_model = ControlledDenoiser(base, self.ema_trainable).eval()

    def _load_data(self) -> None:
        cfg = self.config
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.output / "cache"
        if cfg.data.phantoms is not None:
            folder = cache / f"phantoms-{phantom_set_id(cfg.data.phantoms)}"
            manifest = folder / "manifest.csv"
            if self.dist.main:
                make_phantom_set(cfg.data.phantoms, folder, self.progress)
            self._barrier()
        else:
            manifest = Path(cfg.data.manifest)
        self.manifest = manifest
        records = read_manifest(manifest)
        # rank 0 preprocesses (and caches) every volume first; the others then read the cache
        if self.dist.main:
            self.data = TrainingData(records, cfg.data, cfg.window, cfg.task, cache, cfg.seed, preprocess_volumes=False)
            self.data.preprocess_all(self.progress)
        self._barrier()
        if not self.dist.main:
            self.data = TrainingData(records, cfg.data, cfg.window, cfg.task, cache, cfg.seed)

    def _loader(self):
        """Micro-batches of samples, built by `num_workers` DataLoader processes ahead of the training
        step (0: in this process). The order is the deterministic sample stream either way."""
        prepare = functools.partial(prepare_batch, dropout=self.config.condition_dropout,
                                    timesteps=self.scheduler.num_train_timesteps)
        if self.config.num_workers == 0:
            return (prepare([self.data.sample(g) for g in ids]) for ids in self.micro_batches(self.step))
        from torch.utils.data import DataLoader

        return iter(DataLoader(SampleStream(self.data), batch_sampler=self.micro_batches(self.step),
                               num_workers=self.config.num_workers, collate_fn=prepare, prefetch_factor=2,
                               worker_init_fn=quiet_worker))

    def _barrier(self) -> None:
        if self.dist.world > 1 and dist.is_initialized():
            dist.barrier()

    # ------------------------------------------------------------------------------------- one step

    def sample_ids(self, step: int, micro: int) -> list[int]:
        """Global sample indices of one micro-batch of this process: (local index) x world + rank, so a
        single process with batch B x R sees the samples that R processes with batch B see together."""
        cfg = self.config
        local = (step * cfg.accumulation + micro) * cfg.batch_size
        return [(local + i) * self.dist.world + self.dist.rank for i in range(cfg.batch_size)]

    def _loss(self, model, prepared: tuple[Batch, torch.Tensor, torch.Tensor], train: bool = True) -> torch.Tensor:
        batch, noise, timesteps = prepared
        batch = batch.to(self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        loss_fn = self._loss_fn if train else epsilon_loss  # validation (no gradients) runs uncompiled
        args = (model, self.scheduler, batch, noise.to(self.device), timesteps.to(self.device))
        if loss_fn is epsilon_loss or self._compiled_once:
            with autocast:
                return loss_fn(*args)
        try:  # the first compiled call compiles: without a working C++ compiler, train uncompiled
            with autocast:
                loss = loss_fn(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; the step is simply redone
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {message}); training without it")
            self._loss_fn = epsilon_loss
            with autocast:
                return epsilon_loss(*args)
        self._compiled_once = True
        return loss

    def micro_batches(self, start_step: int):
        """The sample-index lists of every micro-batch from `start_step` on, in training order."""
        for step in range(start_step, self.config.steps):
            for micro in range(self.config.accumulation):
                yield self.sample_ids(step, micro)

    def accumulate(self, step: int, loaded=None) -> float:
        """Forward and backward over the step's micro-batches; gradients end up averaged over the
        micro-batches and, when distributed, over the processes. Returns this process's mean loss.
        `loaded` iterates over prepared micro-batches (from the DataLoader); without it they are built here."""
        cfg = self.config
        model = self.ddp if self.ddp is not None else self.model
        total = 0.0
        for micro in range(cfg.accumulation):
            last = micro == cfg.accumulation - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            with sync:
                if loaded is not None:
                    prepared = next(loaded)
                else:
                    prepared = prepare_batch([self.data.sample(g) for g in self.sample_ids(step, micro)],
                                             cfg.condition_dropout, self.scheduler.num_train_timesteps)
                loss = self._loss(model, prepared)
                self.scaler.scale(loss / cfg.accumulation).backward()
            total += loss.item()
        return total / cfg.accumulation

    def train_step(self, loaded=None) -> tuple[float, float]:
        cfg = self.config
        self.trainable.train()
        loss = self.accumulate(self.step, loaded)
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._update_ema()
        if self.dist.world > 1:  # the logged loss is the mean over all processes
            t = torch.tensor([loss], device=self.device)
            dist.all_reduce(t)
            loss = t.item() / self.dist.world
        return loss, float(norm)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # warm-up (as in common EMA practice): early weights are forgotten quickly, so short runs export
        # a useful average too
        decay = min(self.config.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        for e, p in zip(self.ema_trainable.parameters(), self.trainable.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)

    # ------------------------------------------------------------------------------------- validation

    @torch.no_grad()
    def validation_loss(self, use_ema: bool = True) -> float | None:
        """Mean loss over the fixed validation samples (no condition dropout), of the EMA weights by
        default. The samples are rebuilt each time (deterministically): at 128^3 a stored set would not fit."""
        if not self.data.val_records:
            return None
        model = self.ema_model if use_ema else self.model
        was_training = model.training
        model.eval()
        total, count, chunk = 0.0, 0, []
        prepare = functools.partial(prepare_batch, dropout=0.0, timesteps=self.scheduler.num_train_timesteps)
        for item in self.data.validation_samples(self.config.val_samples):
            chunk.append(item)
            if len(chunk) == self.config.batch_size:
                total += self._loss(model, prepare(chunk), train=False).item() * len(chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            total += self._loss(model, prepare(chunk), train=False).item() * len(chunk)
            count += len(chunk)
        model.train(was_training)
        return total / count

    @torch.no_grad()
    def sample_image(self, path: Path) -> Path:
        """A whole-volume-level sample from the EMA weights next to the reference it was conditioned on."""
        volume = self.data.val_volume(0) if self.data.val_records else self.data.train_volume(0)
        from .data import make_sample

        ref = make_sample(volume, self.config.window, "whole", np.random.default_rng(0), self.config.task)
        cond = Conditions(region=ref.region, anatomy=ref.anatomy, control=ref.control)
        w = self.config.window
        estimator = SlidingWindowEstimator(self.ema_model, (w, w, w), cond, WindowConfig(), self.device)
        x = torch.randn((1, 1, w, w, w), generator=make_generator(self.config.seed)).to(self.device)
        out = sample(estimator, alphas_cumprod(PAPER_SCHEDULE), x, spaced_timesteps(self.config.sample_steps))
        rows = [("reference", ref.image[0].numpy()), ("sample", out[0, 0].cpu().numpy())]
        if ref.control is not None:
            rows.insert(1, ("control", ref.control[0].numpy()))
        return save_slices(path, rows, f"step {self.step}")

    # ------------------------------------------------------------------------------------- files

    def _log(self, name: str, header: list[str], row: list[Any]) -> None:
        path = self.output / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(header)
            writer.writerow(row)

    def _truncate_logs(self, step: int) -> None:
        """Drop log rows past `step` (written after the checkpoint a resumed run starts from)."""
        for name in ("losses.csv", "validation.csv"):
            path = self.output / name
            if not path.exists():
                continue
            rows = list(csv.reader(path.read_text().splitlines()))
            # a row cut short (a power cut while it was written) goes too
            kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
            tmp = path.with_name(f".{name}.tmp")
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)
            os.replace(tmp, path)

    def read_losses(self) -> list[tuple[int, float]]:
        path = self.output / "losses.csv"
        rows = list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []
        return [(int(r["step"]), float(r["loss"])) for r in rows]

    def save_checkpoint(self) -> Path:
        cfg = self.config
        extra = {"config": cfg.to_dict(), "elapsed_seconds": self.elapsed, "world_size": self.dist.world,
                 "scaler": self.scaler.state_dict(), "task": cfg.task, "speed": self.speed_settings()}
        return save_checkpoint(self.output / "checkpoints", self.step, self.trainable.state_dict(),
                               self.ema_trainable.state_dict(), self.optimizer, extra, cfg.keep_checkpoints)

    def resume(self) -> bool:
        """Continue from the newest checkpoint in <output>/checkpoints; False when there is none."""
        found = list_checkpoints(self.output / "checkpoints")
        if not found:
            return False
        for path in reversed(found):
            try:
                state, weights, ema, opt = load_checkpoint(path)
                break
            except Exception as exc:  # noqa: BLE001 - safetensors, JSON and OS errors alike
                # e.g. a power cut while the newest was written: go back to the one before
                if path == found[0]:
                    raise InputError(f"no readable checkpoint in {self.output / 'checkpoints'}: {exc}") from exc
                warnings.warn(f"checkpoint {path.name} is unreadable ({exc}); resuming from the one before")
        found = [p for p in found if p <= path]
        # read back through the config classes, so that a field added since the checkpoint was written
        # compares as its default and does not block the resume
        old, new = _normalised(state["config"]), self.config.to_dict()
        changed = [k for k in TRAJECTORY_KEYS if _trajectory(old, k) != _trajectory(new, k)]
        if changed:
            raise InputError(
                f"cannot resume from {found[-1]}: the config changed in {', '.join(changed)}; "
                "resume with the same config (only steps and the reporting intervals may change), or use a new --output"
            )
        if state["world_size"] * old["batch_size"] != self.dist.world * self.config.batch_size:
            raise InputError("cannot resume exactly: processes x batch_size differs from the checkpoint's run")
        self.trainable.load_state_dict(weights)
        self.ema_trainable.load_state_dict(ema)
        restore_optimizer(self.optimizer, opt, state["optimizer"])
        self.scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        if self.dist.main:
            self._truncate_logs(self.step)
        return True

    # ------------------------------------------------------------------------------------- the run

    def check_folders(self, resume: bool = False, overwrite: bool = False) -> list[str]:
        """Refuse, before any work, to start over in a folder that holds a run (unless `overwrite`) and to
        write into the bundled models folder unless the export folder names the model there. Returns what
        the run folder already holds."""
        if resume and overwrite:
            raise InputError("--resume and --overwrite contradict each other: continue the run, or start it over")
        bundled = BUNDLED_DIR.resolve()
        inside = lambda p: p == bundled or bundled in p.parents  # noqa: E731
        cache = self.config.data.cache_dir
        for what, path in (("run folder (--output)", self.output), ("cache folder", Path(cache) if cache else None)):
            if path is not None and inside(path.resolve()):
                raise InputError(f"the {what} {path} lies in the bundled models folder {BUNDLED_DIR}; choose "
                                 "a folder elsewhere (for example runs/<name>)")
        export = self.export_dir.resolve()
        if inside(export) and not (self.export_named and export.parent == bundled and export.name == self.config.name):
            raise InputError(
                f"the export folder {self.export_dir} lies in the bundled models folder; the bundled models are "
                f"replaced only when asked for by name: --export {BUNDLED_DIR / self.config.name}"
            )
        held = [name for name in RUN_FILES if (self.output / name).exists()]
        if held and not (resume or overwrite):
            raise InputError(
                f"{self.output} already holds a training run ({', '.join(held)}); continue it with --resume, "
                "start it over with --overwrite (its logs, checkpoints, samples and model are deleted), "
                "or choose another --output"
            )
        return held

    def _clear_run(self) -> None:
        """--overwrite: remove the previous run's files (the cache of preprocessed volumes stays)."""
        for name in RUN_FILES:
            path = self.output / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def run(self, resume: bool = False, overwrite: bool = False) -> dict[str, str]:
        held = self.check_folders(resume, overwrite)
        if overwrite and held and self.dist.main:
            self._clear_run()
        self._barrier()
        self.setup()
        cfg = self.config
        resumed = self.resume() if resume else False
        if resume and not resumed and self.dist.main:
            self._truncate_logs(-1)  # nothing to resume from: start over, without the stray log rows
            self.progress.note("training", f"no checkpoint in {self.output / 'checkpoints'}: starting at step 0")
        if self.dist.main:
            (self.output / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.progress.note("training", "; ".join(f"{k} {v}" for k, v in self.speed_settings().items()))
        with StopSignals() as stop:
            return self._train(resumed, stop)

    def _stop_requested(self, stop: StopSignals) -> int | None:
        """The signal that asked to stop, agreed by every process (they must stop at the same step)."""
        if self.dist.world == 1:
            return stop.signum
        t = torch.tensor([stop.signum or 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item()) or None

    def _train(self, resumed: bool, stop: StopSignals) -> dict[str, str]:
        cfg = self.config
        self.progress.start("training", cfg.steps, f"resumed at step {self.step}" if resumed else "")
        self.progress.step(min(self.step, cfg.steps))
        if self.step == 0 and self.dist.main:
            # the starting point: for a ControlNet (zero output convolutions) this is the base model's loss
            val = self.validation_loss()
            if val is not None:
                self._log("validation.csv", ["step", "val_loss"], [0, f"{val:.6f}"])
        recent: list[float] = []
        loaded = self._loader()
        last_checkpoint = time.monotonic()
        while self.step < cfg.steps:
            started = time.perf_counter()
            loss, norm = self.train_step(loaded)
            self.elapsed += time.perf_counter() - started
            recent = (recent + [loss])[-50:]
            step = self.step
            if self.dist.main:
                self._log("losses.csv", ["step", "loss", "lr", "grad_norm", "seconds"],
                          [step, f"{loss:.6f}", cfg.lr, f"{norm:.4f}", f"{self.elapsed:.1f}"])
                if step % cfg.validate_every == 0 or step == cfg.steps:
                    val = self.validation_loss()
                    if val is not None:
                        self._log("validation.csv", ["step", "val_loss"], [step, f"{val:.6f}"])
                if cfg.sample_every and (step % cfg.sample_every == 0):
                    self.sample_image(self.output / "samples" / f"step-{step:06d}.png")
                due = cfg.checkpoint_minutes > 0 and time.monotonic() - last_checkpoint >= 60 * cfg.checkpoint_minutes
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or due:
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
            self._barrier()
            self.progress.step(step, f"loss {np.mean(recent):.4f}")
            signum = self._stop_requested(stop)
            if signum is not None:
                self._stop(signum)
        outputs = {}
        if self.dist.main:
            outputs = self.export()
        self._barrier()
        return outputs

    def _stop(self, signum: int) -> None:
        """Save a checkpoint at the step just finished (unless there is one) and stop with the signal."""
        if self.dist.main:
            folder = self.output / "checkpoints" / f"step-{self.step:06d}"
            path = folder if folder.is_dir() else self.save_checkpoint()
            self.progress.note("training", f"stopped by {signal.Signals(signum).name} at step {self.step}; "
                                           f"checkpoint {path}; continue with --resume")
        self._barrier()
        raise Interrupted(signum)

    def export(self) -> dict[str, str]:
        """The EMA weights as a model file with its card, and the loss curve beside it."""
        cfg = self.config
        losses = self.read_losses()
        vals = read_csv(self.output / "validation.csv")
        tail = [v for _, v in losses[-50:]]
        phantoms = cfg.data.phantoms is not None
        provenance = {
            "trained_on": self._data_description(),
            "manifest": None if phantoms else str(cfg.data.manifest),
            "optimizer_steps": self.step,
            "samples_seen": self.step * cfg.accumulation * cfg.batch_size * self.dist.world,
            "processes": self.dist.world,
            "device": self.device.type,
            "wall_seconds_training": round(self.elapsed, 1),
            "final_train_loss_mean_last_50": round(float(np.mean(tail)), 5) if tail else None,
            "final_val_loss": round(vals[-1][1], 5) if vals else None,
            "command": self.command,
            "config_file": self.config_file,
            "config": cfg.to_dict(),
            "weights": "EMA of the trained weights",
            "software": {"torch": torch.__version__, "monai": monai_version(), "python": platform.python_version()},
        }
        fields: dict[str, Any] = dict(
            name=cfg.name, architecture=cfg.network.to_dict(), working_spacing=tuple(float(s) for s in cfg.data.spacing),
            licence=DEMO_LICENCE if phantoms else "Inherits the licences of the training datasets; see provenance.",
            intended_use=PHANTOM_USE if phantoms else REAL_DATA_USE,
            description=cfg.description, provenance=provenance,
        )
        if cfg.task is None:
            fields["kind"] = "base"
        else:
            fields.update(kind="controlnet", base_model=self.base_card.name,
                          control=self.trainable.config.to_dict())
            provenance["base_model_sha256"] = self.base_card.sha256
        card = save_model(self.ema_trainable, self.export_dir, **fields)
        curve = plot_losses(self.export_dir / "loss_curve.png", losses, vals, cfg.name)
        return {"model": str(card), "loss_curve": str(curve), "log": str(self.output / "losses.csv")}

    def _data_description(self) -> str:
        cfg = self.config
        n_train, n_val = len(self.data.train_records), len(self.data.val_records)
        spacing = "x".join(f"{s:g}" for s in cfg.data.spacing)
        if cfg.data.phantoms is not None:
            p = cfg.data.phantoms
            return (f"{n_train} procedural CT phantoms (MedDiffFMLogic.phantoms) for training and {n_val} for "
                    f"validation, no real CT: regions {', '.join(p.regions)}; seeds {p.seeds[0]}-{p.seeds[1] - 1} "
                    f"(train) and {p.val_seeds[0]}-{p.val_seeds[1] - 1} (validation) per region; about "
                    f"{'x'.join(map(str, p.size))} voxels at {'x'.join(f'{s:g}' for s in p.spacing)} mm, "
                    f"lesions per phantom {p.lesions[0]}-{p.lesions[1]}; resampled to {spacing} mm")
        return f"{n_train} training and {n_val} validation CT volumes from {cfg.data.manifest}, resampled to {spacing} mm"
