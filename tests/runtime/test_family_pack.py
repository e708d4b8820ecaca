"""A model family added as a third-party pack (tests/packs/fake_family_pack) works like a built-in one:
found through the entry point, trained by the generic nodes, saved by its own saver, and refused by
another family's saver at validation."""

from __future__ import annotations

from pathlib import Path

from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph import Link
from runtime.graph_file import load_graph
from runtime.registry import Registry
from runtime.validate import validate

PACKS = Path(__file__).resolve().parent.parent / "packs"


def install_pack(site: Path, monkeypatch) -> Registry:
    """Registers the fake family's pack through a dist-info entry point, as pip would."""
    dist = site / "fake_family_pack-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-family-pack\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nodetrainer.nodes]\nfake = fake_family_pack\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PACKS))
    reg = Registry.discover(builtin=True, entry_points=True)
    assert reg.get("fake.tiny_model") and not reg.load_errors, reg.load_errors
    return reg


def run(reg, graph, workspace: Path, **kw):
    v = validate(graph, reg, for_run=True)
    assert v.ok, [str(p) for p in v.problems]
    sink = ListSink()
    r = execute(v, workspace=workspace, bus=EventBus([sink]), **kw)
    assert r.ok, r.error
    return r, sink


def test_a_family_from_a_pack_trains_with_the_generic_nodes_and_saves(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    reg = install_pack(tmp_path / "site", monkeypatch)
    graph = load_graph(PACKS / "fake_family.yaml", reg)
    _, sink = run(reg, graph, tmp_path / "run")
    losses = [e["loss"] for e in sink.of("progress") if e["node"] == "train"]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    saved = load_file(str(tmp_path / "run" / "fake" / "model.safetensors"))
    untrained, _ = run(reg, load_graph(PACKS / "fake_family.yaml", reg), tmp_path / "untrained",
                       targets=("model",), keep=("model",))
    start = untrained.outputs["model"]["model"].denoiser.state_dict()
    assert set(saved) == set(start) and any(not torch.equal(saved[k], start[k]) for k in start)


def test_another_familys_saver_behind_the_loop_is_refused_naming_both_types(tmp_path, monkeypatch):
    reg = install_pack(tmp_path / "site", monkeypatch)
    graph = load_graph(PACKS / "fake_family.yaml", reg)
    entry = graph.add_node("sd_save", "sd.save_lora", reg.get("sd.save_lora").version, {})
    entry.inputs["model"] = Link("train", "trained")
    problems = [p for p in validate(graph, reg).problems if p.node == "sd_save"]
    assert problems and "FakeModel" in problems[0].message and "SDModel" in problems[0].message
