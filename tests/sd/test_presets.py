"""The shipped SD presets, run end to end through the CLI (slow: each is a training run)."""

from __future__ import annotations

import pytest

from runtime.paths import ASSETS_DIR, GRAPHS_DIR
from tests.conftest import parse_events, run_cli

SD_PRESETS = ["sd15-lora.yaml", "sd2-lora.yaml"]
ALL_GRAPHS = sorted(p.name for p in GRAPHS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", ALL_GRAPHS)
def test_presets_validate(name):
    r = run_cli("validate", GRAPHS_DIR / name)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_every_shipped_graph_is_run_by_a_test():
    from tests.sd.test_setups import PRESETS as SETUP_PRESETS
    from tests.flux.test_presets import PRESETS as FLUX_PRESETS
    from tests.sdxl.test_presets import PRESETS as SDXL_PRESETS
    from tests.data.test_concept_presets import PRESETS as DATA_PRESETS

    run_by_tests = {"quickstart.yaml", *SD_PRESETS,  # here
                    *SETUP_PRESETS,  # tests/sd/test_setups.py
                    *SDXL_PRESETS,  # tests/sdxl/test_presets.py
                    *FLUX_PRESETS,  # tests/flux/test_presets.py
                    *DATA_PRESETS,  # tests/data/test_concept_presets.py
                    "example-manifest.yaml"}  # tests/editor/test_run.py, from the editor
    assert set(ALL_GRAPHS) == run_by_tests, "a graph in graphs/ that no test runs (or a test of a removed one)"


def check_run(r, workspace, lora_name: str, prompts: int):
    events = parse_events(r.stdout)
    errors = [e.get("traceback") or e.get("message") for e in events if e["event"] == "error"]
    assert r.returncode == 0, (errors, r.stderr[-3000:])
    progress = [e for e in events if e["event"] == "progress" and e["node"] == "train"]
    assert progress and all({"loss", "smoothed_loss", "lr", "epoch"} <= set(e) for e in progress)
    # the graph's own saver and sampler nodes; hooks report as the training node
    saved = {e["format"]: e["path"] for e in events if e["event"] == "saved" and e["node"] != "train"}
    assert saved == {"kohya_lora": str(workspace / "lora" / f"{lora_name}.safetensors"),
                     "diffusers_lora": str(workspace / "lora" / f"{lora_name}.diffusers.safetensors")}
    samples = [e for e in events if e["event"] == "sample"]
    assert len([e for e in samples if e["node"] != "train"]) == prompts
    assert all(p.endswith(".png") for e in samples for p in e["paths"])
    assert sorted(p.name for p in (workspace / "samples").iterdir()) == sorted(
        p.split("/")[-1] for e in samples for p in e["paths"])
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "ok"
    return events


@pytest.mark.slow
def test_quickstart_trains_saves_and_samples(tmp_path):
    ws = tmp_path / "run"
    r = run_cli("run", GRAPHS_DIR / "quickstart.yaml", "--events", "jsonl", "--workspace", ws,
                "--set", "steps=6", timeout=600)
    events = check_run(r, ws, "quickstart", prompts=2)
    assert [e["step"] for e in events if e["event"] == "progress" and e["node"] == "train"] == list(range(1, 7))
    assert (ws / "graph.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("preset,version,prediction", [("sd15-lora.yaml", "sd1", "epsilon"),
                                                      ("sd2-lora.yaml", "sd2", "v_prediction")])
def test_real_size_presets_run_with_the_tiny_model_substituted(tmp_path, preset, version, prediction):
    """The presets' base model is a graph input: a saved tiny model folder stands in for SD 1.5 / 2.1."""
    from safetensors import safe_open

    from nodes.sd.build import build_tiny, save_diffusers

    folder = save_diffusers(build_tiny(seed=0, version=version, prediction_type=prediction), tmp_path / "base")
    ws = tmp_path / "run"
    r = run_cli("run", GRAPHS_DIR / preset, "--events", "jsonl", "--workspace", ws,
                "--set", f"base_model={folder}", "--set", f"dataset={ASSETS_DIR / 'demo_dataset'}",
                "--set", "resolution=64", "--set", "steps=2", "--set", "rank=2",
                "--set", "bucket.quantization=16", "--set", f"cache.folder={tmp_path / 'cache'}",
                "--set", "sample.steps=2", "--set", "previews.steps=2", "--set", "sample_every=1",
                "--set", "save_every=2", timeout=600)  # the presets' float16 weights + fp16 autocast run on CPU too
    events = check_run(r, ws, "lora", prompts=1)
    # the preset's hooks: previews each step, a periodic save and a backup at step 2, TensorBoard logs
    previews = [e for e in events if e["event"] == "sample" and e["node"] == "train"]
    assert [e["step"] for e in previews] == [1, 2]
    periodic = sorted(e["path"] for e in events if e["event"] == "saved" and e["node"] == "train")
    assert periodic == sorted([str(ws / "backups" / "step-000002"), str(ws / "lora" / "lora-step000002.safetensors"),
                               str(ws / "lora" / "lora-step000002.diffusers.safetensors")])
    assert (ws / "backups" / "step-000002" / "meta.json").is_file()
    assert list((ws / "tensorboard").glob("events.out.tfevents.*"))
    with safe_open(str(ws / "lora" / "lora.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["nodetrainer_model_version"] == version and meta["nodetrainer_prediction_type"] == prediction
    assert meta["ss_network_dim"] == "2" and meta["nodetrainer_graph"] in ("SD 1.5 LoRA", "SD 2.x LoRA")
    assert any((tmp_path / "cache").rglob("*")), "the disk cache was not written"
