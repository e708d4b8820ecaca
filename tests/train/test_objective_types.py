"""Objectives are typed to the models they serve (``Output(Objective, serves=T)``): train.loop refuses,
at validation, a model whose type as connected is not a ``T``, naming both types. A fake flow-matching
family (tests/runtime/test_passthrough_types.py) meets the real train.flow_matching_objective."""

from __future__ import annotations

import pytest

from runtime.graph_file import loads_graph
from runtime.port_types import DDPMModel, PortType
from runtime.validate import validate

from nodes.sd.types import SDModel
from tests.runtime.test_passthrough_types import pack_reg


@pytest.fixture(scope="module")
def reg():
    return pack_reg()


GRAPH = """
nodes:
  sd: {type: sd.tiny_model}
  flow: {type: famtest.load_flow}
  ddpm: {type: train.diffusion_objective}
  fm: {type: train.flow_matching_objective}
  opt: {type: train.optimizer}
  batches: {type: test.toy_batches}
  p: {type: famtest.pass, in: {model: MODEL}}
  train:
    type: train.loop
    in: {model: p.out, batches: batches.batches, optimizer: opt.optimizer, objective: OBJECTIVE}
"""


def check(reg, model: str, objective: str):
    graph = loads_graph(GRAPH.replace("MODEL", model).replace("OBJECTIVE", objective), reg)
    result = validate(graph, reg)
    return [p for p in result.problems if p.node == "train"], result


def test_a_flow_matching_objective_refuses_a_ddpm_family_model_naming_both_types(reg):
    [problem], result = check(reg, "sd.model", "fm.objective")
    assert problem.code == "type_mismatch" and problem.field == "input 'model'"
    assert problem.message.startswith(
        "fm.objective (input 'objective') serves FlowMatchingModel models, but p.out is SDModel "
        "(it passes on what feeds p.model): connect a FlowMatchingModel here")
    assert not result.ok


def test_a_flow_matching_objective_trains_a_flow_family_model_through_pass_throughs(reg):
    problems, result = check(reg, "flow.model", "fm.objective")
    assert problems == [] and result.ok, [str(p) for p in result.problems]


def test_the_ddpm_objective_declares_what_it_serves_and_every_sd_model_is_one(reg):
    served = reg.get("train.diffusion_objective").outputs["objective"].serves
    assert isinstance(served, PortType) and SDModel.is_a(served)
    problems, result = check(reg, "sd.model", "ddpm.objective")
    assert problems == [] and result.ok, [str(p) for p in result.problems]


def test_the_ddpm_objective_refuses_a_flow_matching_model(reg):
    assert reg.get("train.diffusion_objective").outputs["objective"].serves is DDPMModel
    [problem], _ = check(reg, "flow.model", "ddpm.objective")
    assert "serves DDPMModel models, but p.out is FakeFlowModel" in problem.message


def test_the_ddpm_objective_refuses_at_run_time_a_model_without_a_ddpm_schedule():
    """A model value that is not a DDPMBundle (a pack whose model type skipped DDPMModel) fails with one line."""
    import torch

    from nodes.train.bundle import ModelBundle
    from nodes.train.objective import DiffusionObjective

    class Flowy(ModelBundle):
        family = "flowy"

    with pytest.raises(TypeError, match="train.diffusion_objective trains models on DDPM noise.*'flowy' model has no "
                                        "DDPM noise schedule"):
        DiffusionObjective().loss(Flowy(), {"latent": torch.zeros(1, 4, 8, 8)}, torch.Generator())
