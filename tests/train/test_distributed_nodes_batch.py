"""The quickstart graph on 2 ranks x batch 2 (torchrun) trains as 1 process x batch 4: each step's samples
are the one-process batch (data.batches), and with per-sample draws their noise is too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def trained(tmp_path: Path, name: str, launcher: list[str], batch: int) -> tuple[list[float], dict]:
    """The train node's losses and the saved LoRA of one quickstart run."""
    from safetensors.torch import load_file

    runs = tmp_path / name
    cmd = launcher + ["-m", "runtime", "run", str(ROOT / "graphs" / "quickstart.yaml"), "--runs-dir", str(runs),
                      "--set", "steps=3", "--set", f"batches.batch_size={batch}", "--set", "objective.draws=per_sample"]
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (ws,) = [p for p in runs.iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (ws / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "progress" and e["node"] == "train"]
    return losses, load_file(ws / "lora" / "quickstart.safetensors")


def test_two_ranks_at_batch_2_train_as_one_process_at_batch_4(tmp_path):
    one, lora1 = trained(tmp_path, "one", [sys.executable], 4)
    two, lora2 = trained(tmp_path, "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc-per-node", "2"], 2)
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    assert lora1.keys() == lora2.keys() and lora1
    # AdamW at lr 1e-3 moves a weight ~1e-3 a step whatever its gradient's size, so the ranks' float sums
    # (a mean of two means) show as up to ~1e-5 on the weights of near-zero gradients
    worst = max((lora2[k] - lora1[k]).abs().max().item() for k in lora1)
    assert worst < 2e-5, worst
