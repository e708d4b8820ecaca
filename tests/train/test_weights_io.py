"""Same tensors and metadata give the same .safetensors bytes in every process (the library's header order
is a hash map's); the rewritten header still loads everywhere."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

WRITE = """
import sys, torch
from nodes.weights_io import write_safetensors
from safetensors.torch import save_file
tensors = {f"w{i}": torch.full((3, i + 1), float(i)) for i in range(6)}
tensors["half"] = torch.ones(5, dtype=torch.float16)
meta = {f"key{i}": f"value {i} é" for i in range(16)}
(save_file if sys.argv[2] == "library" else write_safetensors)(tensors, sys.argv[1], metadata=meta)
"""


def write_in_a_new_process(path: Path, how: str) -> str:
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", WRITE, str(path), how], check=True, cwd=root)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_input_same_bytes_across_processes_and_the_file_loads(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    ours = {write_in_a_new_process(tmp_path / f"ours{i}.safetensors", "ours") for i in range(3)}
    library = {write_in_a_new_process(tmp_path / f"lib{i}.safetensors", "library") for i in range(3)}
    assert len(ours) == 1
    assert len(library) > 1  # the library alone: the order changes between processes
    loaded = load_file(str(tmp_path / "ours0.safetensors"))
    reference = load_file(str(tmp_path / "lib0.safetensors"))
    assert set(loaded) == set(reference) and all(torch.equal(loaded[k], reference[k]) for k in loaded)
    with safe_open(str(tmp_path / "ours0.safetensors"), framework="pt") as f:
        assert f.metadata() == {f"key{i}": f"value {i} é" for i in range(16)}
