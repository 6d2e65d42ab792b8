"""Distributed training: a 2-process torchrun run on the CPU (gloo) averages gradients to exactly what
one process computes on the same samples."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from MedDiffFMLogic.training.commands import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]

# One optimizer step's gradients (2 micro-batches), written by rank 0; the same script runs alone
# (WORLD_SIZE unset: one process) or under torchrun.
SCRIPT = """
import sys
import torch
from safetensors.torch import save_file
from MedDiffFMLogic.training.config import load_config
from MedDiffFMLogic.training.trainer import Trainer

config_path, output, batch, cache, target = sys.argv[1:6]
config = load_config(config_path, batch_size=int(batch), accumulation=2, **{"data.cache_dir": cache})
trainer = Trainer(config, output, device="cpu").setup()
loss = trainer.accumulate(0)
if trainer.dist.rank == 0:
    grads = {n: p.grad.contiguous() for n, p in trainer.trainable.named_parameters() if p.grad is not None}
    save_file(grads, target, metadata={"world": str(trainer.dist.world), "loss": repr(loss)})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_gradients_equal_one_process_on_the_same_data(tmp_path):
    script = tmp_path / "grads.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    tiny = str(CONFIG_DIR / "tiny.json")
    # one process, batch 2 (this also builds the phantom set and the cache the two processes share)
    subprocess.run([sys.executable, str(script), tiny, str(tmp_path / "one"), "2", str(cache), str(tmp_path / "one.st")],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    # two processes, batch 1 each
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
                    "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                    str(script), tiny, str(tmp_path / "two"), "1", str(cache), str(tmp_path / "two.st")],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    one, two = load_file(str(tmp_path / "one.st")), load_file(str(tmp_path / "two.st"))
    assert set(one) == set(two) and len(one) > 10
    assert any(g.abs().sum() > 0 for g in one.values())
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-7), name
