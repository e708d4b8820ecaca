"""benchmarks/bench_distributed.py runs its three torchrun runs with the smallest settings and prints every
figure as a number (no timing targets: on a shared 2-core machine they are noise)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_distributed.py"
NUMBER = r"-?\d+\.\d+"


def bench(*argv: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_prints_step_times_speedup_efficiency_and_communication_share():
    done = bench("--steps", "2", "--warmup", "1", "--rounds", "1", "--device", "cpu", timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert out[0].startswith("distributed: tiny SD LoRA (graphs/quickstart.yaml) through torchrun, cpu/gloo, "
                             "16 square 64 px images, global batch 4; 2 steps per run, first 1 left out")
    steps = {}
    for label in ("1 rank  x batch 4", "2 ranks x batch 2, ddp", "2 ranks x batch 2, off"):
        (line,) = [line for line in out if line.startswith(label + " ")]
        m = re.search(rf"median step\s+({NUMBER}) ms\s+({NUMBER}) samples/s\s+\(1 steps", line)
        assert m, line
        steps[label] = float(m.group(1))
        assert steps[label] > 0 and float(m.group(2)) > 0
    ratios = {}
    for label in ("speedup", "scaling efficiency", "communication share", "compute efficiency without sync"):
        (line,) = [line for line in out if line.startswith(label + " ")]
        m = re.match(rf"{label}\s+({NUMBER})( %)?\s+\(", line)
        assert m, line
        ratios[label] = float(m.group(1))
    assert ratios["speedup"] > 0 and ratios["scaling efficiency"] > 0 and ratios["compute efficiency without sync"] > 0
    # the ratios are the step medians' (each run has one step after the warm-up)
    one, ddp, off = steps.values()
    assert ratios["speedup"] == pytest.approx(one / ddp, rel=0.01)
    assert ratios["scaling efficiency"] == pytest.approx(one / (2 * ddp), rel=0.01)
    assert ratios["communication share"] == pytest.approx((ddp - off) / ddp * 100, abs=0.2)
    assert any(line.startswith("per round: scaling efficiency ") for line in out)
    assert out[-1].startswith("note: 2 ranks x 1 thread(s) on") and "not meaningful" in out[-1]


def test_too_few_ranks_is_one_line():
    done = bench("--ranks", "1", timeout=60)
    assert done.returncode == 2
    assert "--ranks 1: must be at least 2" in done.stderr
