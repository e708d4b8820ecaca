"""Under torchrun every rank runs the graph: the saver and sampler nodes after train.loop write their
files and previews on rank 0 only, and the validation hook (rank 0 alone) reads every batch, not its
rank's shard."""

from __future__ import annotations

import pytest

from runtime.context import RunContext


@pytest.fixture
def rank_one(monkeypatch):
    monkeypatch.setattr(RunContext, "rank", property(lambda self: 1))


def test_a_saver_node_after_training_writes_on_rank_0_only(trained, tmp_path, rank_one):
    from nodes.sd.savers import SaveLora
    from tests.train.helpers import NodeRunner

    model, _files, _ = trained
    runner = NodeRunner(tmp_path)
    out = runner.run(SaveLora, "save", {"model": model}, name="rank1")
    assert out["saver"] is not None  # the saver value still goes to hooks that want it
    assert runner.events("saved") == [] and not list(tmp_path.rglob("*.safetensors"))


def test_a_sampler_node_after_training_previews_on_rank_0_only(trained, tmp_path, rank_one):
    from nodes.sd.sampler import Sample
    from tests.train.helpers import NodeRunner

    model, _files, _ = trained
    out = NodeRunner(tmp_path).run(Sample, "sample", {"model": model}, prompts=["x"], width=32, height=32,
                                   steps=1, device="cpu")
    assert out["images"] == [] and not list(tmp_path.rglob("*.png"))


def test_the_validation_hook_reads_the_whole_plan_not_a_shard():
    import contextlib
    from types import SimpleNamespace

    from nodes.train.hook_nodes import ValidationHook
    from nodes.train.objective import DiffusionObjective
    from tests.train.helpers import ListBatches, make_toy

    class Sharded:
        """A batch source as rank 0 of two sees it: its shard raises, for_rank(0, 1) is every batch."""

        def for_rank(self, rank, world):
            self.asked = (rank, world)
            return ListBatches(n=6, batch_size=2)

        def epoch(self, epoch, start=0):
            raise AssertionError("validated on this rank's shard")

    logged = []
    run = SimpleNamespace(model=make_toy(), objective=DiffusionObjective(), metrics={}, state=SimpleNamespace(step=3),
                          inference_weights=contextlib.nullcontext,
                          ctx=SimpleNamespace(log=lambda msg, **kw: logged.append(msg), warn=logged.append))
    batches = Sharded()
    ValidationHook("val", None, batches, None, max_batches=0, seed=0).fire(run, "schedule")
    assert batches.asked == (0, 1)
    assert logged and "(3 batches)" in logged[0] and "validation_loss" in run.metrics
