"""Path kinds: ``FileOrDir`` (a diffusers folder or a single file) beside ``File`` and ``Dir``."""

from __future__ import annotations

import json

import pytest

from runtime import Param
from runtime.graph_file import loads_graph
from runtime.params import INPUT_KINDS, Dir, File, FileOrDir, ParamError
from runtime.registry import Registry
from runtime.validate import validate
from tests.conftest import run_cli


def test_file_or_dir_checks_like_any_path_and_says_it_takes_both():
    kind = FileOrDir("open", filter="*.safetensors")
    assert kind.coerce("models/sd15") == "models/sd15" and kind.coerce("a.safetensors") == "a.safetensors"
    for bad, why in (("", "file or folder path"), ("   ", "file or folder path"), (3, "number 3"),
                     (None, "null"), (["a"], "a list"), ("a\x00b", "NUL"), ("caf\udce9", "not valid UTF-8")):
        with pytest.raises(ParamError, match=why):
            kind.coerce(bad)
    assert kind.describe() == {"kind": "path", "mode": "open", "picks": ["file", "dir"], "filter": "*.safetensors"}
    assert File().describe()["picks"] == ["file"] and Dir("save").describe()["picks"] == ["dir"]
    assert kind.is_path and "path" in kind.accepts_inputs and "dir" in kind.accepts_inputs
    with pytest.raises(ValueError):
        FileOrDir("write")
    assert INPUT_KINDS["path"] is FileOrDir  # a graph input 'type: path' takes either, as its docs say


def test_load_model_path_takes_a_folder_or_a_file_and_old_graphs_load(tmp_path):
    reg = Registry.discover(entry_points=False)
    param = reg.get("sd.load_model").params["path"]
    assert isinstance(param.kind, FileOrDir)
    assert param.describe()["picks"] == ["file", "dir"]
    (tmp_path / "sd15").mkdir()
    text = ("format: nodetrainer.graph/1\nname: x\ninputs:\n  base: {type: path, default: sd15}\n"
            "nodes:\n  base:\n    type: sd.load_model@1\n    params: {path: '${base}'}\n")
    graph = loads_graph(text, reg, path=tmp_path / "g.yaml")
    assert graph.nodes["base"].params["path"] == "${base}"  # saved as plain text, no version bump
    assert graph.inputs["base"].kind().describe()["picks"] == ["file", "dir"]
    result = validate(graph, reg)
    codes = [p.code for p in result.problems if p.field == "param 'path'"]
    assert codes == ["check"], result.problems  # a folder is taken; the loader's own check looks inside it
    graph.inputs["base"].default = "missing"
    result = validate(graph, reg)
    missing = [p for p in result.problems if p.code == "not_found"]
    assert missing and all(p.message.endswith("missing") for p in missing)
    p = Param(FileOrDir(), doc="x")
    assert p.check("sd15") == "sd15"


def test_nodes_describe_json_names_the_kind():
    r = run_cli("nodes", "--describe", "sd.load_model", "--json")
    assert r.returncode == 0, r.stderr
    path = next(p for p in json.loads(r.stdout)["params"] if p["name"] == "path")
    assert path["kind"] == "path" and path["picks"] == ["file", "dir"] and path["mode"] == "open"
