"""Setups never change a model another node of the run also uses: they work on their own copy of the
parts they change when (and only when) another node can still see those parts (``ctx.users_of``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from runtime import Input, Output, node
from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph_file import loads_graph
from runtime.paths import ASSETS_DIR, GRAPHS_DIR
from runtime.port_types import Any
from runtime.registry import Registry
from runtime.validate import validate

# -- who is a user: the executor's answer, on torch-free toy nodes ------------------------------


class Thing:
    """Something a node could change in place."""


@dataclass(eq=False)
class Box:
    part: Thing


@node("share.source", title="Source")
class Source:
    whole = Output(Any)
    part = Output(Any)

    def run(self, ctx):
        box = Box(Thing())
        return {"whole": box, "part": box.part}


@node("share.asker", title="Asker")
class Asker:
    """Records who else uses the box's part, as a setup asks before changing it."""

    whole = Input(Any)
    out = Output(Any)

    def run(self, ctx, whole):
        ctx.path("users.json").write_text(json.dumps(ctx.users_of(whole.part)))
        return {"out": whole}


class Lazy:
    """What a data stage returns: something that will use the value later (not one of its fields)."""

    def __init__(self, value):
        self._value = value


@node("share.stage", title="Stage")
class Stage:
    """Like a data stage: keeps the value to use it while the training loop runs."""

    value = Input(Any)
    out = Output(Any)

    def run(self, ctx, value):
        return {"out": Lazy(value)}


@node("share.step", title="Step")
class Step:
    """Like a pass-through node (train.loop, EMA): hands on what it got."""

    value = Input(Any)
    out = Output(Any)

    def run(self, ctx, value):
        return {"out": value}


@node("share.sink", title="Sink", sink=True)
class Sink:
    values = Input(Any, multi=True)

    def run(self, ctx, values):
        return {}


@pytest.fixture(scope="module")
def toy_registry():
    reg = Registry.discover(builtin=True, entry_points=False)
    for cls in (Source, Asker, Stage, Step, Sink):
        reg.register(cls)
    return reg


def users_in(text: str, registry, tmp_path: Path, keep=()) -> list[str]:
    v = validate(loads_graph(text, registry), registry, for_run=True)
    assert v.ok, v.problems
    result = execute(v, workspace=tmp_path, keep=keep)
    assert result.ok, result.error
    return json.loads((tmp_path / "users.json").read_text())


def test_a_value_used_by_no_other_node_has_no_users(toy_registry, tmp_path):
    assert users_in("""
nodes:
  src: {type: share.source}
  ask: {type: share.asker, in: {whole: src.whole}}
  end: {type: share.sink, in: {values: [ask.out]}}
""", toy_registry, tmp_path) == []


def test_a_node_that_will_be_handed_the_value_or_its_part_is_a_user(toy_registry, tmp_path):
    assert users_in("""
nodes:
  src: {type: share.source}
  ask: {type: share.asker, in: {whole: src.whole}}
  end: {type: share.sink, in: {values: [ask.out]}}
  later: {type: share.sink, in: {values: [src.part]}}
  later_whole: {type: share.sink, in: {values: [src.whole]}}
""", toy_registry, tmp_path) == ["later", "later_whole"]


def test_a_finished_node_counts_only_while_its_results_lead_to_a_node_still_to_run(toy_registry, tmp_path):
    # 'sampled' ran before the asker and nothing follows it; 'stage' ran too, but what it made goes to
    # 'loop', which runs after the asker (a data stage handed the text encoder, used in the training loop)
    assert users_in("""
nodes:
  src: {type: share.source}
  sampled: {type: share.sink, in: {values: [src.part]}}
  stage: {type: share.stage, in: {value: src.part}}
  ask: {type: share.asker, in: {whole: src.whole}}
  loop: {type: share.sink, in: {values: [ask.out, stage.out]}}
""", toy_registry, tmp_path) == ["stage"]


def test_a_node_whose_results_reach_the_rest_only_through_the_asker_is_not_a_user(toy_registry, tmp_path):
    # a pass-through before the setup (train.loop -> setup) does not make the setup copy
    assert users_in("""
nodes:
  src: {type: share.source}
  before: {type: share.step, in: {value: src.whole}}
  ask: {type: share.asker, in: {whole: before.out}}
  end: {type: share.sink, in: {values: [ask.out]}}
""", toy_registry, tmp_path) == []


def test_an_output_kept_for_the_caller_is_a_user(toy_registry, tmp_path):
    assert users_in("""
nodes:
  src: {type: share.source}
  ask: {type: share.asker, in: {whole: src.whole}}
  end: {type: share.sink, in: {values: [ask.out]}}
""", toy_registry, tmp_path, keep=("src",)) == ["src"]


# -- the setups, given a context that says who else uses their input --------------------------------

def ctx_with_users(runner, node_id: str, type_id: str, users: dict):
    """A node's context whose ``users_of`` answers from ``users`` (object id -> node ids)."""
    from runtime.context import RunContext

    return RunContext(node_id, type_id, runner.bus, runner.cancel, runner.inbox, runner.workspace,
                      users=lambda obj: users.get(id(obj), []))


def run_setup(runner, cls, model, users: dict, **params):
    return runner.make(cls, **params).run(ctx_with_users(runner, "setup", cls.__node_spec__.type_id, users),
                                          model=model)


def state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_adapts_a_copy_of_a_unet_another_node_uses_and_says_so(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    base = build_tiny()
    unet, te = base.unet, base.text_encoder
    before = state(unet)
    out = run_setup(runner, LoraSetup, base, {id(base.unet): ["base_sample"]}, rank=2)["adapted"]
    assert out.unet is not unet and out.text_encoder is te  # only the shared part it changes is copied
    assert not hasattr(unet, "peft_config") and same(state(unet), before)
    assert not any(p.requires_grad for p in unet.parameters())
    assert any("lora_A" in k for k in out.unet.state_dict())
    [line] = [e["message"] for e in runner.events("log", "setup") if "copied" in e["message"]]
    assert re.fullmatch(r"copied the unet \(\d+\.\d [kMG]B; also used by base_sample\) to add the adapters there, "
                        r"leaving what the other nodes see unchanged", line), line


def test_lora_on_a_model_nobody_else_uses_adapts_it_in_place(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    base = build_tiny()
    out = run_setup(runner, LoraSetup, base, {id(base.text_encoder): ["encode_text"]}, rank=2)["adapted"]
    assert out.unet is base.unet and out.text_encoder is base.text_encoder  # the text encoder is not changed
    assert not [e for e in runner.events("log", "setup") if "copied" in e["message"]]


def test_a_trained_text_encoder_is_copied_away_from_the_data_graph(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    base = build_tiny()
    te = state(base.text_encoder)
    out = run_setup(runner, LoraSetup, base, {id(base.text_encoder): ["encode_text"]}, rank=2,
                    train_text_encoder=True)["adapted"]
    assert out.unet is base.unet and out.text_encoder is not base.text_encoder
    assert same(state(base.text_encoder), te) and not hasattr(base.text_encoder, "peft_config")
    assert any("lora_A" in k for k in out.text_encoder.state_dict())
    assert any("text_encoder" in e["message"] and "encode_text" in e["message"]
               for e in runner.events("log", "setup"))


def test_finetune_trains_copies_of_the_shared_parts_it_trains(runner):
    import torch

    from nodes.sd.build import build_tiny
    from nodes.sd.finetune import FinetuneSetup

    base = build_tiny()
    base.unet.half()
    users = {id(base.unet): ["base_sample"], id(base.text_encoder): ["encode_text"]}
    out = run_setup(runner, FinetuneSetup, base, users, train_text_encoder=True)["adapted"]
    assert out.unet is not base.unet and out.text_encoder is not base.text_encoder and out.vae is base.vae
    assert base.unet.dtype == torch.float16 and out.unet.dtype == torch.float32
    assert not any(p.requires_grad for part in (base.unet, base.text_encoder) for p in part.parameters())
    assert all(p.requires_grad for p in out.unet.parameters())


def test_embedding_adds_its_tokens_to_a_copy_of_a_shared_text_encoder(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.embedding import EmbeddingSetup

    base = build_tiny()
    rows = base.text_encoder.get_input_embeddings().num_embeddings
    te = state(base.text_encoder)
    out = run_setup(runner, EmbeddingSetup, base, {id(base.text_encoder): ["encode_text"]},
                    placeholder="<shape>", vectors=2)["adapted"]
    assert out.text_encoder is not base.text_encoder and out.unet is base.unet
    assert type(base.text_encoder.get_input_embeddings()).__name__ == "Embedding"
    assert base.text_encoder.get_input_embeddings().num_embeddings == rows and same(state(base.text_encoder), te)
    assert type(out.text_encoder.get_input_embeddings()).__name__ == "TrainableTokens"

    alone = build_tiny()
    kept = run_setup(runner, EmbeddingSetup, alone, {}, placeholder="<shape>", vectors=2)["adapted"]
    assert kept.text_encoder is alone.text_encoder  # nobody else uses it: changed in place, as before


# -- whole runs: the quickstart with a sampler of the base model beside the LoRA setup -----------------

def quickstart(tmp_path: Path, **extra_nodes) -> dict:
    graph = yaml.safe_load((GRAPHS_DIR / "quickstart.yaml").read_text())
    graph["inputs"]["dataset"]["default"] = str(ASSETS_DIR / "demo_dataset")
    graph["inputs"]["steps"]["default"] = 2
    graph["nodes"]["sample"]["params"]["steps"] = 2
    graph["nodes"].update(extra_nodes)
    return graph


BASE_SAMPLE = {"type": "sd.sample@1", "in": {"model": "model.model"},
               "params": {"prompts": ["a red circle"], "steps": 2, "width": 32, "height": 32, "seed": 7,
                          "folder": "base_samples", "device": "cpu"}}


def run_graph(graph: dict, ws: Path, targets=()):
    from runtime.registry import default_registry

    registry = default_registry()
    v = validate(loads_graph(yaml.safe_dump(graph, sort_keys=False), registry), registry, for_run=True)
    assert v.ok, v.problems
    sink = ListSink()
    result = execute(v, workspace=ws, bus=EventBus([sink]), graph_name="Quickstart", targets=targets)
    assert result.ok, result.error
    return sink


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_a_base_model_sampler_beside_the_lora_setup_samples_the_untouched_model(tmp_path):
    from safetensors.torch import load_file

    graph = quickstart(tmp_path, base_sample=BASE_SAMPLE)
    sink = run_graph(graph, tmp_path / "both")
    order = [e["node"] for e in sink.of("node_started")]
    assert order.index("train") < order.index("base_sample"), "the base sampler runs after the training"
    [line] = [e["message"] for e in sink.of("log") if e["node"] == "lora" and "copied" in e["message"]]
    assert "copied the unet" in line and "also used by base_sample" in line and "text_encoder" not in line

    run_graph(graph, tmp_path / "alone", targets=("base_sample",))  # the base model, no setup in the run
    assert files(tmp_path / "both" / "base_samples") == files(tmp_path / "alone" / "base_samples")

    plain = run_graph(quickstart(tmp_path), tmp_path / "plain")  # no fan-out: in place, as before
    assert not [e for e in plain.of("log") if "copied" in e["message"]]
    a = load_file(str(tmp_path / "both" / "lora" / "quickstart.safetensors"))
    b = load_file(str(tmp_path / "plain" / "lora" / "quickstart.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "the copy trains the same LoRA"
