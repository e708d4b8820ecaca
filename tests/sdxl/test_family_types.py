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


HOOK_GRAPH = GRAPH.replace("  save: {type: SAVER, in: {model: train.trained}}\n", """  previews: {type: SAMPLER}
  samples: {type: train.sample_hook, in: {samplers: [previews.sampler]}}
  periodic: {type: SAVER}
  saves: {type: train.save_hook, in: {savers: [periodic.saver]}}
""").replace("objective: obj.objective}", "objective: obj.objective, hooks: [samples.hook, saves.hook]}")


def hook_problems(sampler: str, saver: str) -> list:
    reg = default_registry()
    text = (HOOK_GRAPH.replace("BASE", "sdxl.tiny_model").replace("SETUP", "sdxl.lora_setup")
            .replace("SAMPLER", sampler).replace("SAVER", saver))
    return [p for p in validate(loads_graph(text, reg), reg).problems if p.severity == "error" and p.node == "train"
            and p.code == "type_mismatch"]


def test_samplers_and_savers_in_the_loops_hooks_must_serve_its_model():
    assert hook_problems("sdxl.sample", "sdxl.save_lora") == []
    problems = hook_problems("sd.sample", "sd.save_lora")
    assert {p.field for p in problems} == {"input 'model'"} and len(problems) == 2
    messages = " | ".join(p.message for p in problems)
    assert "samples.hook (input 'hooks') serves SDModel models, but setup.adapted is SDXLModel" in messages
    assert "saves.hook (input 'hooks') serves SDModel models" in messages
