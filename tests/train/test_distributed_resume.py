"""Resume under torch.distributed (2 gloo ranks on the CPU, started with torch.multiprocessing).

Each rank draws its own training noise (the diffusion objective, from the run's generator) and its own
dropout (torch's global generator). A 2-rank run stopped after step STOP and resumed on 2 ranks must end
with the weights of an uninterrupted 2-rank run: every rank's RNG states are in the backup. A backup is
one collective: rank 0's hook or command asks for it, every rank takes part, rank 0 writes the folder.
A wrapper with ``save_sharded`` / ``load_sharded`` (what the FSDP wrapper has) is called on every rank
with one folder, and resuming through it reaches the same weights.

One spawn for all: each rank runs the uninterrupted run, the stopped one and its resumption in turn, with
DDP's wrappers, then again with the sharded ones.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs

pytestmark = pytest.mark.slow

WORLD, STEPS, STOP, COMMAND_AT = 2, 5, 3, 3
#: (folder, rank) of every save_sharded / load_sharded call of the fake sharded wrapper in this process
SHARDED_CALLS: list = []


class NoisyObjective:
    """The diffusion objective (noise and timesteps from the run's generator), recording each rank's RNG
    states at the start of every forward (one forward per step: entry n is the state after n steps).
    On rank 1 it raises the stop flag at its ``stop_at``-th call (a SIGTERM that reached that rank only);
    on rank 0 it sends the backup command at its ``command_at``-th call."""

    def __init__(self, runner, stop_at: int = 0, command_at: int = 0):
        from nodes.train.objective import DiffusionObjective

        self.inner, self.runner, self.stop_at, self.command_at = DiffusionObjective(), runner, stop_at, command_at
        self.generator_states, self.torch_states = [], []

    def loss(self, model, batch, generator):
        import torch

        from nodes.train import distributed

        self.generator = generator  # the run's: its state at the end is read after the run
        self.generator_states.append(generator.get_state())
        self.torch_states.append(torch.get_rng_state())
        calls = len(self.generator_states)
        if distributed.rank() == 1 and calls == self.stop_at:
            self.runner.cancel.request("SIGTERM received")
        if distributed.rank() == 0 and calls == self.command_at:
            self.runner.inbox.put({"command": "backup"})
        return self.inner.loss(model, batch, generator)


class FailingSaver:
    """A saver whose every save fails (a full disk at the end of the run)."""

    format = "lora"

    def save(self, ctx, model, step=None):
        raise OSError(28, "No space left on device")


def train(workspace: Path, rank: int, stop_at: int = 0, command_at: int = 0, resume: Path | None = None,
          final_save_fails: bool = False) -> dict:
    """Train the toy model with dropout on this rank's batches (a backup hook every 2 steps); return the
    weights, the number of 'saved' events, the RNG states the objective saw and how the run ended."""
    import torch

    from nodes.train.hook_nodes import Backups, PeriodicSave
    from nodes.train.loop import TrainLoop

    runner = NodeRunner(workspace)
    runner.resume = resume
    model = make_toy(seed=rank)
    model.net.insert(2, torch.nn.Dropout(0.3))  # draws from torch's global generator, per rank
    for p in model.net[0].parameters():
        p.requires_grad_(False)
    hooks = [runner.run(Backups, "backups", every=2, keep=10)["hook"]]
    if final_save_fails:
        hooks.append(runner.run(PeriodicSave, "save", {"savers": [FailingSaver()]}, every=0, at_end=True)["hook"])
    objective = NoisyObjective(runner, stop_at, command_at)
    batches = ListBatches(n=8, batch_size=2, seed=10 + rank)  # 4 batches per epoch: the run crosses an epoch
    inputs = train_inputs(model, batches, lr=1e-2, objective=objective, hooks=hooks)
    try:
        runner.run(TrainLoop, "train", inputs, max_steps=STEPS, device="cpu", distributed="ddp")
        error = ""
    except RuntimeError as e:
        error = str(e)
    end = {"generator": objective.generator.get_state(), "torch_rng": torch.get_rng_state()}
    return {"weights": {k: v.detach().clone() for k, v in model.net.state_dict().items()}, "error": error, "end": end,
            "saved": len(runner.events("saved")), "step": model.progress.get("step"),
            "generator_states": objective.generator_states, "torch_states": objective.torch_states}


def three_runs(out: Path, rank: int) -> dict:
    """The uninterrupted run (with the backup command at step COMMAND_AT), the run stopped after step STOP,
    its resumption from the stop's backup, and a run whose final save fails on rank 0."""
    whole = train(out / "whole", rank, command_at=COMMAND_AT)
    stopped = train(out / "parted", rank, stop_at=STOP)
    resumed = train(out / "parted", rank, resume=out / "parted" / "backups" / f"step-{STOP:06d}")
    final = train(out / "final", rank, final_save_fails=True)
    return {"whole": whole, "stopped": stopped, "resumed": resumed, "final": final,
            "sharded_calls": list(SHARDED_CALLS)}


def sharded_parts(mode, model, device):
    """DDP wrappers that also have the sharded backup methods of the FSDP wrapper (rank-local files)."""
    from nodes.train.distributed import DDPParts

    class ShardedParts(DDPParts):
        def save_sharded(self, folder, optimizer) -> None:
            import torch

            from nodes.train import distributed

            SHARDED_CALLS.append(("save", str(folder), distributed.rank()))
            shards = Path(folder) / "sharded"
            shards.mkdir(exist_ok=True)
            weights = {n: p.detach().clone() for n, p in self.model.named_trainable_parameters()}
            torch.save({"weights": weights, "optimizer": optimizer.state_dict()},
                       shards / f"rank{distributed.rank()}.pt")
            distributed.barrier()
            if distributed.is_main():
                (shards / ".metadata").write_bytes(b"fake")

        def load_sharded(self, folder, optimizer) -> None:
            import torch

            from nodes.train import distributed

            SHARDED_CALLS.append(("load", str(folder), distributed.rank()))
            data = torch.load(Path(folder) / "sharded" / f"rank{distributed.rank()}.pt", weights_only=True)
            with torch.no_grad():
                for name, p in self.model.named_trainable_parameters():
                    p.copy_(data["weights"][name])
            optimizer.load_state_dict(data["optimizer"])

    return ShardedParts(model, device)


def _rank_main(rank: int, port: int, out: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=30)  # a missing collective fails in seconds, not 30 minutes
    try:
        plain = three_runs(Path(out) / "plain", rank)
        distributed.parallel_parts = sharded_parts
        sharded = three_runs(Path(out) / "sharded", rank)
        torch.save({"plain": plain, "sharded": sharded}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(out: Path) -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    return out, run_ranks(out)


@pytest.fixture
def plain(spawned):
    out, ranks = spawned
    return out / "plain", [r["plain"] for r in ranks]


@pytest.fixture
def sharded(spawned):
    out, ranks = spawned
    return out / "sharded", [r["sharded"] for r in ranks]


def assert_same_weights(ranks: list[dict]) -> None:
    import torch

    for r in ranks:
        assert r["stopped"]["step"] == STOP and r["resumed"]["step"] == STEPS == r["whole"]["step"]
        for name, w in r["whole"]["weights"].items():
            torch.testing.assert_close(r["resumed"]["weights"][name], w, atol=1e-6, rtol=0, msg=name)


def test_a_run_stopped_and_resumed_on_two_ranks_ends_where_an_uninterrupted_one_does(plain):
    """Noise from the run's generator and dropout from torch's differ per rank; both continue from the
    backup on each rank as if never stopped (before, the other ranks re-seeded their noise on resume and
    took rank 0's torch RNG state)."""
    import torch

    _, ranks = plain
    assert_same_weights(ranks)
    for r in ranks:  # the draws after the resume are the uninterrupted run's draws
        for resumed, whole in zip(r["resumed"]["generator_states"], r["whole"]["generator_states"][STOP:]):
            assert torch.equal(resumed, whole)
    assert not torch.equal(ranks[0]["whole"]["generator_states"][1], ranks[1]["whole"]["generator_states"][1])


def test_a_backup_under_two_ranks_is_written_once_by_rank0_with_every_ranks_rng_states(plain):
    """The backup hook (every 2 steps) and the backup command (at step COMMAND_AT) ask on rank 0; the ranks
    agree on it after the step; rank 0 alone writes the folder and reports it, and its state.pt holds each
    rank's generator and torch RNG states of that step."""
    import torch

    out, ranks = plain
    backups = out / "whole" / "backups"
    assert sorted(p.name for p in backups.iterdir()) == ["step-000002", "step-000003", "step-000004"]
    assert ranks[0]["whole"]["saved"] == 3 and ranks[1]["whole"]["saved"] == 0
    assert json.loads((backups / "step-000003" / "meta.json").read_text())["reason"] == "command"
    assert json.loads((backups / "step-000004" / "meta.json").read_text())["reason"] == "schedule"
    for step in (2, 3, 4):
        data = torch.load(backups / f"step-{step:06d}" / "state.pt", weights_only=True)
        entries = data["rank_rngs"]
        assert len(entries) == WORLD
        for rank, entry in enumerate(entries):
            assert torch.equal(entry["generator"], ranks[rank]["whole"]["generator_states"][step])
            assert torch.equal(entry["torch_rng"], ranks[rank]["whole"]["torch_states"][step])
        assert torch.equal(data["generator"], entries[0]["generator"])


def test_a_sharded_wrapper_saves_and_loads_on_every_rank_with_one_folder(sharded):
    """With a wrapper that has save_sharded/load_sharded (the FSDP one), every backup calls save_sharded on
    both ranks with the same (temporary) folder, which rank 0 renames into place after both wrote; the
    backup then holds no weights file and no optimizer state, check_backup accepts it, and the resume
    calls load_sharded on both ranks with the backup folder and ends where an uninterrupted run does."""
    import torch

    from runtime.backups import check_backup

    out, ranks = sharded
    assert_same_weights(ranks)
    calls = [c for r in ranks for c in r["sharded_calls"]]
    saves = sorted(c for c in calls if c[0] == "save")
    # whole: backups at 2, 3 (command), 4; stopped: 2 and 3 (the stop); resumed: 4; final: 2, 4 and the
    # backup after the failed final save; one folder per backup
    folders = sorted({c[1] for c in saves})
    assert len(folders) == 9 and all(Path(f).name.startswith(".step-") for f in folders)
    assert sorted(c[1:] for c in saves) == sorted((f, r) for f in folders for r in range(WORLD))
    backup = out / "parted" / "backups" / f"step-{STOP:06d}"
    loads = sorted(c for c in calls if c[0] == "load")
    assert loads == [("load", str(backup), 0), ("load", str(backup), 1)]
    assert sorted(p.name for p in (backup / "sharded").iterdir()) == [".metadata", "rank0.pt", "rank1.pt"]
    assert not (backup / "trainable.safetensors").exists()
    assert torch.load(backup / "state.pt", weights_only=True)["optimizer"] is None
    assert check_backup(backup)["sharded"] is True


def test_a_failed_final_save_on_rank0_is_followed_by_a_backup_of_both_ranks(plain):
    """The final save fails on rank 0 (its hooks); the ranks agree on it, and the backup that keeps the
    trained state is written by both (it holds both ranks' RNG states); rank 0's run fails naming it, the
    other rank's ends as usual."""
    import torch

    out, ranks = plain
    backup = out / "final" / "backups" / f"step-{STEPS:06d}"
    assert json.loads((backup / "meta.json").read_text())["reason"] == "final save failed"
    assert ranks[0]["final"]["error"].startswith("training finished, but saving lora at step")
    assert f"the trained state is in the backup {backup}" in ranks[0]["final"]["error"]
    assert ranks[1]["final"]["error"] == ""
    entries = torch.load(backup / "state.pt", weights_only=True)["rank_rngs"]
    for entry, r in zip(entries, ranks):  # each rank's states at the end of the run
        assert torch.equal(entry["generator"], r["final"]["end"]["generator"])
        assert torch.equal(entry["torch_rng"], r["final"]["end"]["torch_rng"])
