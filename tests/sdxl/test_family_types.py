"""The SDXL family's types through the generic nodes: an SDXLModel stays one behind train.loop, so SDXL
savers and samplers accept it and SD's refuse it at validation (the editor's drag check: tests/editor/test_family_drag.py)."""

from __future__ import annotations

import pytest

from runtime.graph_file import loads_graph
from runtime.registry import default_registry
from runtime.validate import validate

GRAPH = """
nodes:
  base: {type: BASE}
  setup: {type: SETUP, in: {model: base.model}}
  opt: {type: train.optimizer}
  obj: {type: train.diffusion_objective}
  train:
    type: train.loop
    in: {model: setup.adapted, batches: batches.batches, optimizer: opt.optimizer, objective: obj.objective}
  batches: {type: data.batches, in: {fields: [base.vae]}}
  save: {type: SAVER, in: {model: train.trained}}
"""


def problems(base: str, setup: str, saver: str) -> list:
    reg = default_registry()
    graph = loads_graph(GRAPH.replace("BASE", base).replace("SETUP", setup).replace("SAVER", saver), reg)
    return [p for p in validate(graph, reg).problems if p.node == "save" and p.severity == "error"]


@pytest.mark.parametrize("saver", ["sdxl.save_lora", "sdxl.save_diffusers", "sdxl.save_checkpoint", "sdxl.sample",
                                   "sdxl.save_embedding"])
def test_sdxl_model_through_the_loop_is_taken_by_the_sdxl_savers_and_sampler(saver):
    assert problems("sdxl.tiny_model", "sdxl.lora_setup", saver) == []


@pytest.mark.parametrize("saver", ["sd.save_lora", "sd.save_checkpoint", "sd.sample", "sd.save_embedding"])
def test_sdxl_model_through_the_loop_is_refused_by_sd_nodes_naming_both_types(saver):
    [problem] = problems("sdxl.tiny_model", "sdxl.lora_setup", saver)
    assert "train.trained is SDXLModel" in problem.message and "takes SDModel" in problem.message


@pytest.mark.parametrize("setup", ["sdxl.lora_setup", "sdxl.finetune_setup", "sdxl.embedding_setup"])
def test_an_sd_model_is_refused_by_the_sdxl_setups(setup):
    reg = default_registry()
    graph = loads_graph(f"nodes:\n  base: {{type: sd.tiny_model}}\n  s: {{type: {setup}, in: {{model: base.model}}}}\n",
                        reg)
    [problem] = [p for p in validate(graph, reg).problems if p.node == "s" and p.severity == "error"]
    assert "base.model is SDModel" in problem.message and "takes SDXLModel" in problem.message
