"""Step time of the tiny model's LoRA training on 1 rank and on N ranks at the same global batch, through torchrun.

Each run is the real command line under torch's launcher, ``python -m torch.distributed.run --standalone
--nproc-per-node N -m runtime run graphs/quickstart.yaml --set ...``, on a dataset of square 64 px images
(one bucket, so every batch is full): 1 rank at batch N x B against N ranks at batch B each (the same
global batch, the same steps per epoch). The step times are rank 0's ``step_time`` of the ``progress``
events in the run's events.jsonl, the first ``--warmup`` steps of each run left out (DDP's first buckets,
the cache fill, the allocator). Runs alternate in rounds (1 rank, N ranks DDP, N ranks off).

The communication share comes from a third run: N ranks with train.loop's ``distributed: off`` at batch B,
the same compute per rank on the same shards but no gradient sync (each rank trains alone). So
``share = (t_ddp - t_off) / t_ddp``: the gradient all-reduce, the loss mean and stop agreement, and the
waiting for the slower rank. Figures printed: the median step of each run kind, samples per second, the
speedup ``t_1 / t_N`` and the scaling efficiency ``t_1 / (N x t_N)`` (1.0 = N ranks do the same global
batch N times faster).

On a CPU (gloo) every rank gets ``--threads`` torch threads (default 1; the 1-rank run too): on this
2-core machine the ranks compete with each other and with whatever else runs for the cores, so the CPU
speedup and efficiency are not meaningful there; the CPU run checks the path and shows the
communication share. On a machine with at least N GPUs (``--device auto`` or ``cuda``: NCCL, rank r on
``cuda:r``) the same script reports the scaling efficiency that matters.

    python benchmarks/bench_distributed.py [--steps 20] [--ranks 2] [--batch 2] [--device auto|cpu|cuda]
                                           [--rounds 2] [--warmup 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "graphs" / "quickstart.yaml"
SIZE = 64  # the quickstart's bucket resolution: square images of this size make one bucket


@dataclass
class Run:
    """One torchrun run's figures (rank 0's events)."""

    times: list[float]  # step times after the warm-up, seconds
    log: list[str]  # the run's log messages


def square_images(folder: Path, count: int) -> Path:
    """``count`` seeded square PNGs of SIZE px with .txt captions: one bucket, full batches."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = (rng.random((SIZE // 8, SIZE // 8, 3)) * 255).astype("uint8")
        Image.fromarray(coarse).resize((SIZE, SIZE), Image.Resampling.BICUBIC).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a pattern number {i}", encoding="utf-8")
    return folder


def launch(ranks: int, sets: list[str], runs_dir: Path, threads: int, timeout: float) -> list[dict]:
    """``torchrun --standalone --nproc-per-node ranks -m runtime run`` of the quickstart; rank 0's events."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
           "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           "-m", "runtime", "run", str(QUICKSTART), "--runs-dir", str(runs_dir)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=runs_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun forwards SIGTERM to its ranks and kills them after its shutdown timeout
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise SystemExit(f"bench_distributed: a {ranks}-rank run took over {timeout:.0f} s: {' '.join(cmd)}") from None
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if proc.returncode != 0 or len(folders) != 1:
        tail = (err or out)[-2000:]
        raise SystemExit(f"bench_distributed: the {ranks}-rank run failed (exit {proc.returncode}): "
                         f"{' '.join(cmd)}\n{tail}")
    lines = (folders[0] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def measure(ranks: int, batch: int, mode: str, base: list[str], work: Path, warmup: int, threads: int,
            timeout: float) -> Run:
    """One run: ``ranks`` processes, ``batch`` samples per rank, train.loop's ``distributed`` = ``mode``."""
    sets = [*base, f"batches.batch_size={batch}", f"train.distributed={mode}"]
    events = launch(ranks, sets, Path(tempfile.mkdtemp(dir=work)) / "runs", threads, timeout)
    times = [e["step_time"] for e in events if e["event"] == "progress" and e.get("node") == "train"]
    log = [e.get("message", "") for e in events if e["event"] == "log"]
    if len(times) <= warmup:
        raise SystemExit(f"bench_distributed: {len(times)} step(s) reported, not more than the {warmup} warm-up "
                         "steps: raise --steps")
    return Run(times[warmup:], log)


def check_batches(run: Run, ranks: int, per_rank: int, ddp: bool, what: str) -> None:
    """The run trained as asked: DDP on ``ranks`` ranks when ``ddp``, and full batches of ``per_rank``."""
    start = next((m for m in run.log if m.startswith("training ")), "")
    if ddp != (f" on {ranks} ranks " in start):
        raise SystemExit(f"bench_distributed: the {what} run did not train as asked: {start!r}")
    for message in run.log:
        if message.startswith("epoch ") and " item(s) in " in message:  # data.batches' epoch line
            items, rest = message.split(": ", 1)[1].split(" item(s) in ")
            count = int(rest.split(" batch")[0])
            if int(items) != count * per_rank:
                raise SystemExit(f"bench_distributed: the {what} run's batches are not all of {per_rank}: "
                                 f"{message!r}")


def figures(t1: list[float], tn: list[float], toff: list[float], ranks: int, batch: int) -> list[str]:
    """The printed comparison of the three run kinds (medians)."""
    a, b, c = (statistics.median(t) for t in (t1, tn, toff))
    g = ranks * batch

    def step(label: str, t: float, times: list[float], note: str = "") -> str:
        return (f"{label:32s} median step {t * 1000:9.2f} ms   {g / t:8.1f} samples/s   ({len(times)} steps"
                f"{note})")

    def ratio(label: str, value: str, why: str) -> str:
        return f"{label:32s} {value:>9s}      ({why})"

    return [
        step(f"1 rank  x batch {g}", a, t1),
        step(f"{ranks} ranks x batch {batch}, ddp", b, tn),
        step(f"{ranks} ranks x batch {batch}, off", c, toff, "; distributed: off, no gradient sync"),
        ratio("speedup", f"{a / b:.3f}", f"1-rank step / {ranks}-rank DDP step, same global batch {g}"),
        ratio("scaling efficiency", f"{a / (ranks * b):.3f}", f"1-rank step / ({ranks} x {ranks}-rank DDP step); "
              "1.0 = ideal"),
        ratio("communication share", f"{(b - c) / b * 100:.1f} %", "(ddp step - off step) / ddp step: gradient "
              "all-reduce, loss mean, stop agreement, waiting for the slower rank"),
        ratio("compute efficiency without sync", f"{a / (ranks * c):.3f}", f"1-rank step / ({ranks} x off step): "
              "what sharing the machine costs before any communication"),
    ]


def pick_device(name: str, ranks: int) -> str:
    """``auto``: CUDA when this machine has a GPU per rank, else the CPU. ``cuda`` without them is an error."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return "cuda" if gpus >= ranks else "cpu"
    if name == "cuda" and gpus < ranks:
        raise SystemExit(f"bench_distributed: --device cuda with --ranks {ranks} needs {ranks} GPUs; "
                         f"this machine has {gpus} (NCCL takes one GPU per rank)")
    return name


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    ap.add_argument("--warmup", type=int, default=4, help="first steps of each run left out (default 4)")
    ap.add_argument("--ranks", type=int, default=2, help="processes of the multi-rank runs (default 2)")
    ap.add_argument("--batch", type=int, default=2, help="batch per rank of the multi-rank runs (default 2); "
                                                         "the 1-rank run takes ranks x batch")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: cuda (NCCL) when there is a GPU per rank, else cpu (gloo)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the three runs, alternating (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank, the 1-rank run too (default 1)")
    args = ap.parse_args(argv)
    for name in ("steps", "ranks", "batch", "rounds", "threads"):
        if getattr(args, name) < (2 if name == "ranks" else 1):
            ap.error(f"--{name} {getattr(args, name)}: must be at least {2 if name == 'ranks' else 1}")
    if args.warmup < 0 or args.warmup >= args.steps:
        ap.error(f"--warmup {args.warmup}: must be at least 0 and below --steps {args.steps}")
    device = pick_device(args.device, args.ranks)
    g = args.ranks * args.batch
    count = 4 * g
    timeout = min(600.0, 120.0 + 10.0 * args.steps)
    devices = [f"train.device={device}", f"sample.device={device}", f"preview_settings.device={device}"]
    rounds: list[tuple[list[float], list[float], list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = square_images(work / "images", count)
        base = [f"dataset={data}", f"steps={args.steps}", "sample.steps=1", *devices]
        for _ in range(args.rounds):
            one = measure(1, g, "auto", base, work, args.warmup, args.threads, timeout)
            ddp = measure(args.ranks, args.batch, "ddp", base, work, args.warmup, args.threads, timeout)
            off = measure(args.ranks, args.batch, "off", base, work, args.warmup, args.threads, timeout)
            check_batches(one, 1, g, False, "1-rank")
            check_batches(ddp, args.ranks, args.batch, True, f"{args.ranks}-rank ddp")
            check_batches(off, args.ranks, args.batch, False, f"{args.ranks}-rank off")
            rounds.append((one.times, ddp.times, off.times))
    t1, tn, toff = ([t for r in rounds for t in r[k]] for k in range(3))
    backend = "NCCL" if device == "cuda" else "gloo"
    print(f"distributed: tiny SD LoRA (graphs/quickstart.yaml) through torchrun, {device}/{backend}, {count} square "
          f"{SIZE} px images, global batch {g}; {args.steps} steps per run, first {args.warmup} left out; "
          f"{args.rounds} round(s); torch threads per rank {args.threads}")
    for line in figures(t1, tn, toff, args.ranks, args.batch):
        print(line)
    per = [(statistics.median(a), statistics.median(b), statistics.median(c)) for a, b, c in rounds]
    print("per round: scaling efficiency " + ", ".join(f"{a / (args.ranks * b):.3f}" for a, b, _ in per)
          + "; communication share " + ", ".join(f"{(b - c) / b * 100:.1f} %" for _, b, c in per))
    if statistics.median(tn) < statistics.median(toff):
        print("note: the off runs were slower than the DDP runs (a negative share): other load on the machine "
              "varied more than the communication costs; rerun on an idle machine or with more --rounds")
    cores = os.cpu_count() or 1
    if device == "cpu":
        print(f"note: {args.ranks} ranks x {args.threads} thread(s) on {cores} CPU core(s): the ranks compete for "
              "cores, so CPU speedup and efficiency are not meaningful; run on a machine with a GPU per rank")


if __name__ == "__main__":
    main()
