"""Listing and validating graphs import neither torch nor Qt (they must start fast, anywhere)."""

import json
import subprocess
import sys

from tests.conftest import ROOT, subprocess_env

HEAVY = ("torch", "diffusers", "transformers", "peft", "safetensors", "PySide6", "NodeGraphQt", "Qt")

PROBE = """
import contextlib, io, json, sys
from runtime.cli import main
codes = []
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for argv in {argvs!r}:
        codes.append(main(argv))
print(json.dumps({{"codes": codes, "loaded": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def test_validate_and_nodes_import_neither_torch_nor_qt():
    from runtime.paths import presets

    argvs = [["nodes"], ["nodes", "--describe", "util.scan_files"]] + [["validate", str(p)] for p in presets()]
    code = PROBE.format(argvs=argvs, heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["codes"] == [0] * len(argvs)
    assert result["loaded"] == [], f"imported at list/validate time: {result['loaded']}"
