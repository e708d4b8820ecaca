"""The parts of nodes/train/fsdp.py that need no process group: the check of train.loop under
distributed: fsdp, the choice of blocks to shard, and the safe reading of a DCP checkpoint."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest


class FakeCheck:
    """What check_fsdp uses of runtime.checks.CheckContext: the hooks linked, and errors."""

    def __init__(self, hooks: dict, optimizer: str = "adamw"):
        self.views = {"hooks": [SimpleNamespace(id=i, spec=SimpleNamespace(type_id=t)) for i, t in hooks.items()],
                      "optimizer": [SimpleNamespace(id="opt", spec=SimpleNamespace(type_id="train.optimizer"),
                                                    params={"name": optimizer})]}
        self.errors, self.warnings = [], []

    def linked(self, port):
        return self.views[port]

    def error(self, message, param=None, input=None):
        self.errors.append((message, param or input))

    def warn(self, message, param=None, input=None):
        self.warnings.append((message, param or input))


def test_check_fsdp_refuses_hooks_that_need_the_whole_model_on_rank0_and_fp16():
    from nodes.train.fsdp import check_fsdp

    c = FakeCheck({"bk": "train.backup_hook", "tb": "train.tensorboard", "prev": "train.sample_hook",
                   "ema": "train.ema", "save": "train.save_hook", "val": "train.validation_hook"})
    check_fsdp(c, "fp16")
    refused = [m.split("'")[1] for m, where in c.errors if where == "hooks"]
    assert refused == ["prev", "ema", "save", "val"]
    first = c.errors[0][0]
    assert first.startswith("hook 'prev' (train.sample_hook) cannot run under distributed: fsdp")
    assert "saver nodes after train.loop" in first and "backups" in first and "distributed: ddp" in first
    assert [w for _, w in c.errors].count("precision") == 1
    ok = FakeCheck({"bk": "train.backup_hook"})
    check_fsdp(ok, "bf16")
    assert ok.errors == [] and ok.warnings == []


@pytest.mark.parametrize("optimizer,kernel,error,warning", [
    ("adamw", "fused", None, None), ("sgd", "auto", None, None), ("rmsprop", "foreach", None, None),
    ("sgd", "fused", "optimizer_kernel fused: torch has no fused sgd step for sharded weights", None),
    ("adafactor", "auto", "optimizer 'adafactor' ('opt') cannot step sharded weights", None),
    ("adamw8bit", "auto", "optimizer 'adamw8bit' ('opt') cannot step sharded weights", None),
    ("prodigy", "auto", None, "optimizer 'prodigy' ('opt') is not tested with sharded weights"),
])
def test_check_fsdp_says_which_optimizers_step_sharded_weights(optimizer, kernel, error, warning):
    from nodes.train.fsdp import check_fsdp

    c = FakeCheck({}, optimizer)
    check_fsdp(c, "fp32", kernel)
    assert [m[:len(error)] for m, _ in c.errors] == ([error] if error else [])
    assert [m[:len(warning)] for m, _ in c.warnings] == ([warning] if warning else [])


def test_repeated_blocks_are_the_children_of_the_outermost_lists_of_one_class():
    import torch.nn as nn

    from nodes.train.fsdp import repeated_blocks

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.inner = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])  # inside a block: not its own unit

    class Down(nn.Module):
        def __init__(self):
            super().__init__()
            self.resnets = nn.ModuleList([Layer(), Layer()])

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(2, 2)
            self.layers = nn.ModuleList([Layer(), Layer(), Layer()])
            self.down = nn.ModuleList([Down(), Other()])  # mixed: searched inside
            self.single = nn.ModuleList([Layer()])  # a list of one is a block too
            self.acts = nn.ModuleList([nn.SiLU(), nn.SiLU()])  # no weights

    m = Model()
    blocks = repeated_blocks(m)
    assert [id(b) for b in blocks] == [id(b) for b in [*m.layers, *m.down[0].resnets, m.single[0]]]


def test_safe_reader_reads_a_dcp_checkpoint_and_refuses_foreign_pickles(tmp_path):
    """A DCP checkpoint (written here without a process group) loads through SafeReader; a .metadata
    whose pickle names another callable is refused before anything runs."""
    import torch
    import torch.distributed.checkpoint as dcp

    from nodes.train.fsdp import SafeReader

    saved = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)},
             "optimizer": {"state": {"w": {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]}}
    dcp.save(saved, storage_writer=dcp.FileSystemWriter(str(tmp_path / "ok")), no_dist=True)
    loaded = {"model": {"w": torch.zeros(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16)},
              "optimizer": {"state": {"w": {"step": torch.tensor(0.0)}}, "param_groups": [{"lr": 0.0}]}}
    dcp.load(loaded, storage_reader=SafeReader(str(tmp_path / "ok")), no_dist=True)
    assert torch.equal(loaded["model"]["w"], saved["model"]["w"]) and loaded["model"]["b"].dtype == torch.bfloat16
    assert loaded["optimizer"]["state"]["w"]["step"].item() == 3.0
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 0.1

    class Boom:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".metadata").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(pickle.UnpicklingError, match="names posix.system"):
        SafeReader(str(bad)).read_metadata()
    assert not (tmp_path / "pwned").exists()


def test_a_sharded_backup_into_a_folder_a_rank_cannot_see_is_refused_before_writing(tmp_path):
    # rank 0 made the folder; a rank on a machine with its own disk does not see it (no process group
    # here: this process is that rank)
    from nodes.train.fsdp import FSDPParts

    with pytest.raises(RuntimeError, match="filesystem they all share"):
        FSDPParts.save_sharded(object(), tmp_path / "elsewhere", optimizer=None)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(ValueError, match="filesystem they all share"):
        FSDPParts.load_sharded(object(), tmp_path / "elsewhere", optimizer=None)
