"""benchmarks/bench_train.py --optimizers and --compile run and print their tables (a few steps; no timing
targets): every optimizer asked for gets a line with its ms/step and ratio to AdamW, a missing package is
listed instead, and compiled vs eager prints both medians, the ratio and the compile time."""

from __future__ import annotations

import re
import sys

import pytest

NUMBER = r"\d+\.\d+"


def run_main(bench, monkeypatch, capsys, *argv) -> list[str]:
    monkeypatch.setattr(sys, "argv", ["bench_train.py", *argv])
    bench.main()
    return capsys.readouterr().out.splitlines()


def test_optimizers_mode_prints_each_installed_one_against_adamw(bench, monkeypatch, capsys):
    import nodes.train.optimizers as optimizers

    really_missing = optimizers.missing_package
    monkeypatch.setattr(optimizers, "missing_package", lambda n: "not here" if n == "lion" else really_missing(n))
    out = run_main(bench, monkeypatch, capsys, "--optimizers", "adamw,sgd,lion", "--steps", "2")
    assert out[0].startswith("optimizer step overhead on the tiny SD LoRA (2 steps")
    assert out[1].split() == ["optimizer", "ms/step", "ratio", "ms/opt.step", "ratio"]
    rows = {line.split()[0]: line for line in out[2:] if not line.startswith("skipped")}
    assert set(rows) == {"adamw", "sgd"}
    for row in rows.values():
        assert re.fullmatch(rf"\w+\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}", row), row
    assert out[-1] == "skipped (pip install lion-pytorch): lion"
    assert "steps per run" not in "\n".join(out)  # only this table: the default figures did not run


def test_an_unknown_optimizer_name_is_one_line(bench, monkeypatch, capsys):
    with pytest.raises(SystemExit, match="bench_train: unknown optimizer\\(s\\) adamx; choose from adamw, adam"):
        run_main(bench, monkeypatch, capsys, "--optimizers", "adamx", "--steps", "2")


def test_compile_mode_prints_compiled_against_eager(bench, monkeypatch, capsys):
    """Through train.loop's compile param; dynamo with its eager backend here (inductor's C++ build of the
    UNet takes minutes on a CPU)."""
    from nodes.train import speed

    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")
    out = run_main(bench, monkeypatch, capsys, "--compile", "--steps", "3")
    assert out[0].startswith("compile: sd tiny model, 3 steps per run") and "1 batch shape(s)" in out[0]
    assert re.match(rf"eager    median step\s+{NUMBER} ms   \(CPU {NUMBER} ms; 6 steps in 2 runs\)", out[1]), out[1]
    assert re.match(rf"compiled median step\s+{NUMBER} ms   \(CPU {NUMBER} ms; 2 steps after the first\)", out[2])
    assert re.match(rf"ratio compiled / eager\s+{NUMBER}   \(CPU time {NUMBER}\)", out[3]), out[3]
    assert re.match(rf"compile time\s+-?{NUMBER} s", out[4]), out[4]
    assert len(out) == 5


def test_compile_mode_rejects_an_unknown_mode(bench, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_main(bench, monkeypatch, capsys, "--compile", "fast")
    assert "--compile fast: choose one of default, reduce-overhead" in capsys.readouterr().err
