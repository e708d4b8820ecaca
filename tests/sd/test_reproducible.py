"""Same graph, data and seed: identical files on the CPU; another seed: other files."""

import pytest
from safetensors.torch import load_file

from runtime.paths import GRAPHS_DIR
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def run_quickstart(ws, *sets):
    r = run_cli("run", GRAPHS_DIR / "quickstart.yaml", "--workspace", ws, "--set", "steps=2",
                "--set", "sample.steps=2", *[a for s in sets for a in ("--set", s)], timeout=600)
    assert r.returncode == 0, r.stderr
    lora = load_file(str(ws / "lora" / "quickstart.safetensors"))
    samples = {p.name: p.read_bytes() for p in sorted((ws / "samples").iterdir())}
    files = {p.name: p.read_bytes() for p in sorted((ws / "lora").iterdir())}
    return lora, samples, files


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_quickstart_twice_gives_identical_files_and_another_seed_differs(tmp_path):
    lora1, samples1, files1 = run_quickstart(tmp_path / "a")
    lora2, samples2, files2 = run_quickstart(tmp_path / "b")
    assert same_tensors(lora1, lora2), "two runs with one seed wrote different LoRA weights"
    assert samples1 == samples2 and len(samples1) == 2
    assert files1 == files2 and len(files1) == 2, "the LoRA files differ byte for byte"
    lora3, samples3, _ = run_quickstart(tmp_path / "c", "seed=43")
    assert not same_tensors(lora1, lora3)
    assert samples3 != samples1


def test_adapter_init_follows_the_seed_and_the_node_id(runner):
    """The adapters start from a generator seeded by the seed param and the node id, never the global one."""
    import torch

    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    def lora_a(node_id, seed, noise_first=False):
        if noise_first:
            torch.rand(1000)  # disturbs the global generator: must not matter
        model = runner.run(LoraSetup, node_id, {"model": build_tiny()}, rank=2, seed=seed)["adapted"]
        return {k: v.clone() for k, v in model.unet.state_dict().items() if "lora_A" in k}

    base = lora_a("lora", 0)
    assert same_tensors(base, lora_a("lora", 0, noise_first=True))
    assert not same_tensors(base, lora_a("lora", 1))
    assert not same_tensors(base, lora_a("other", 0))
