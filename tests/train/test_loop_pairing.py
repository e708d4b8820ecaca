"""train.loop's checks of what the optimizer and LR schedule nodes say together, and the learning rate
it reports for learning-rate free optimizers."""

from __future__ import annotations

import pytest

from runtime.graph_file import loads_graph
from runtime.registry import Registry
from runtime.validate import validate
from tests.train.helpers import ListBatches, train_inputs

GRAPH = """format: nodetrainer.graph/1
name: pairing
nodes:
  tiny:
    type: sd.tiny_model@1
  lora:
    type: sd.lora_setup@1
    in: {{model: tiny.model}}
  optimizer:
    type: train.optimizer@1
    params: {{name: {optimizer}}}
  schedule:
    type: train.lr_schedule@1
    params: {{name: {schedule}}}
  objective:
    type: train.diffusion_objective@1
  train:
    type: train.loop@1
    in: {{model: lora.adapted, batches: batches.batches, optimizer: optimizer.optimizer,
         schedule: schedule.schedule, objective: objective.objective}}
  concept:
    type: data.concept@1
    params: {{folder: {folder}}}
  source:
    type: data.concepts@1
    in: {{concepts: [concept.concept]}}
  batches:
    type: data.batches@1
    in: {{fields: [source.loss_weight]}}
"""


@pytest.fixture(scope="module")
def reg():
    return Registry.discover(entry_points=False)


def problems(reg, tmp_path, optimizer, schedule):
    (tmp_path / "a.png").write_bytes(b"")
    graph = loads_graph(GRAPH.format(optimizer=optimizer, schedule=schedule, folder=tmp_path), reg,
                        path=tmp_path / "g.yaml")
    return [p for p in validate(graph, reg).problems if p.node == "train" and p.field == "input 'schedule'"]


def test_the_adafactor_schedule_without_adafactor_is_an_error_before_the_run(reg, tmp_path):
    [p] = problems(reg, tmp_path, "adamw", "adafactor")
    assert p.severity == "error" and "needs the adafactor optimizer with relative_step: true" in p.message
    assert problems(reg, tmp_path, "adamw", "cosine") == []


def test_a_schedule_free_optimizer_under_a_decaying_schedule_is_a_warning(reg, tmp_path):
    [p] = problems(reg, tmp_path, "schedule_free_adamw", "cosine")
    assert p.severity == "warning" and "schedule-free" in p.message
    assert problems(reg, tmp_path, "schedule_free_adamw", "constant") == []


def test_progress_reports_d_times_lr_for_a_learning_rate_free_optimizer(runner, toy):
    from nodes.train.loop import TrainLoop

    pytest.importorskip("prodigyopt")
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(n=4, batch_size=2), lr=1.0, optimizer="prodigy"),
               max_steps=3, device="cpu")
    lrs = [e["lr"] for e in runner.events("progress", "train")]
    # Prodigy's d starts at d0 = 1e-6 and grows: the lr it acts with is d * 1.0, not the schedule's 1.0
    assert all(0 < lr < 1e-3 for lr in lrs), lrs
