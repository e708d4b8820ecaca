"""Issue 15's check through the real CLI: ``torchrun --nproc-per-node 2 -m runtime run quickstart.yaml`` at
batch 2 writes the LoRA file that one process at batch 4 writes (1e-5), with the objective's draws per
sample: the data graph (data.batches: shuffled, bucketed, the one-process batch split over the ranks,
``_epoch`` and ``_index`` on every batch) and the saver run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.test_distributed_cli import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "graphs" / "quickstart.yaml"
# SGD: its update is linear in the gradient (Adam's 1 / sqrt(v) would blow float32 rounding of
# near-zero gradients up past 1e-5); offset noise and input perturbation: every kind of draw counts
SETTINGS = ["steps=3", "objective.draws=per_sample", "objective.offset_noise=0.1", "objective.input_perturbation=0.1",
            "optimizer.name=sgd", "optimizer.lr=0.5", "sample.steps=1"]


def run(tmp_path: Path, name: str, ranks: int, batch_size: int) -> dict:
    from safetensors.torch import load_file

    runs = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port())] if ranks > 1 else [sys.executable])
    sets = [a for s in [*SETTINGS, f"batches.batch_size={batch_size}"] for a in ("--set", s)]
    done = subprocess.run([*launch, "-m", "runtime", "run", str(GRAPH), *sets, "--runs-dir", str(runs)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(runs.glob("*/lora/quickstart.safetensors"))
    assert len(files) == 1, files
    return load_file(files[0])


def test_torchrun_two_ranks_of_two_write_the_lora_of_one_process_of_four(tmp_path):
    import torch

    two = run(tmp_path, "two", ranks=2, batch_size=2)
    one = run(tmp_path, "one", ranks=1, batch_size=4)
    assert set(two) == set(one)
    assert max(float(w.abs().max()) for k, w in one.items() if "lora_up" in k) > 1e-4  # it trained
    for name, w in one.items():
        torch.testing.assert_close(two[name], w, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
