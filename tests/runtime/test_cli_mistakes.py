"""User mistakes on the command line get one clear line and lose nothing: run folders, locks,
failing nodes, device choices, broken pipes, the run record."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, parse_events, run_cli, subprocess_env

QUICK = """
name: mistakes
nodes:
  a: {type: test.const, params: {number: 2}}
  out: {type: test.record, in: {value: a.value}, params: {label: x}}
"""

FAILING = """
name: failing
nodes:
  bad: {type: test.fail, params: {message: the value is wrong}}
"""

WAITING = """
name: waiting
nodes:
  w: {type: test.wait, params: {steps: 2000, delay: 0.02}}
"""


def one_line(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in stderr


def test_workspace_holding_other_files_is_refused_and_left_alone(write_graph, tmp_path):
    graph = write_graph(QUICK)  # tmp_path/graph.yaml: the user's own file
    (tmp_path / "run.json").write_text('{"mine": true}')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    r = run_cli("run", graph, "--workspace", tmp_path)
    assert r.returncode == 2 and one_line(r.stderr), r.stderr
    assert "not empty and is not a run folder" in r.stderr and "graph.yaml" in r.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_run_folder_can_be_run_into_again(write_graph, tmp_path):
    graph = write_graph(QUICK)
    ws = tmp_path / "ws"
    assert run_cli("run", graph, "--workspace", ws).returncode == 0
    r = run_cli("run", graph, "--workspace", ws)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["file", "unwritable", "too_long", "not_utf8"])
def test_unusable_workspace_is_one_line(write_graph, tmp_path, case):
    graph = write_graph(QUICK)
    if case == "file":
        ws = tmp_path / "afile"
        ws.write_text("x")
        expect = "is a file"
    elif case == "unwritable":
        if os.geteuid() == 0:  # root writes anywhere a file system allows: use one that refuses
            ws = "/sys/nodetrainer-test-ws"
        else:
            ro = tmp_path / "ro"
            ro.mkdir()
            ro.chmod(0o555)
            ws = ro / "ws"
        expect = "cannot be used"
    elif case == "too_long":
        ws = tmp_path / ("n" * 300)
        expect = "too long"
    else:
        ws = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff")
        expect = "not valid UTF-8"
    r = run_cli("run", graph, "--workspace", ws)
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) and expect in r.stderr, r.stderr


def test_second_run_into_a_busy_run_folder_fails_at_once_naming_the_holder(write_graph, tmp_path):
    graph = write_graph(WAITING)
    ws = tmp_path / "ws"
    first = subprocess.Popen([sys.executable, "-m", "runtime", "run", str(graph), "--workspace", str(ws),
                              "--events", "jsonl"], cwd=ROOT, env=subprocess_env(), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:  # wait until it is stepping
            if json.loads(line)["event"] == "progress":
                break
        t0 = time.monotonic()
        second = run_cli("run", graph, "--workspace", ws, timeout=60)
        assert time.monotonic() - t0 < 30, "the second run does not wait for the first"
        assert second.returncode == 2 and one_line(second.stderr), second.stderr
        assert "in use by another run" in second.stderr and f"pid {first.pid}" in second.stderr
        first.stdin.write('{"command": "stop"}\n')
        first.stdin.flush()
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    events = [json.loads(x) for x in (ws / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("run_started") == 1, "the refused run wrote no events"
    assert run_cli("run", graph, "--workspace", ws, "--set", "w.steps=1").returncode == 0, "the lock went away"


def test_failing_node_is_one_line_and_the_traceback_goes_to_the_event_log(write_graph, tmp_path):
    graph = write_graph(FAILING)
    ws = tmp_path / "ws"
    r = run_cli("run", graph, "--workspace", ws)
    assert r.returncode == 1
    assert "node 'bad' (test.fail) failed: ValueError: the value is wrong" in r.stderr
    assert "Traceback" not in r.stderr and "--debug" in r.stderr
    errors = [json.loads(x) for x in (ws / "events.jsonl").read_text().splitlines() if '"error"' in x]
    assert "Traceback" in errors[0]["traceback"]
    debug = run_cli("run", graph, "--workspace", tmp_path / "ws2", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_device_this_machine_lacks_is_caught_by_validate_for_run():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    graph = ROOT / "graphs" / "quickstart.yaml"
    r = run_cli("validate", "--for-run", graph, "--set", "train.device=cuda")
    assert r.returncode == 2
    assert "node 'train', param 'device'" in r.stderr and "no CUDA GPU" in r.stderr
    assert "Traceback" not in r.stderr
    assert run_cli("validate", graph, "--set", "train.device=cuda").returncode == 0, "the editor's check allows it"


def test_a_closed_pipe_ends_quietly():
    p = subprocess.Popen([sys.executable, "-m", "runtime", "nodes", "--json"], cwd=ROOT, env=subprocess_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()  # like `| head -c 10`
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_run_record_names_the_library_versions_and_devices(tmp_path):
    ws = tmp_path / "ws"
    r = run_cli("run", ROOT / "graphs" / "quickstart.yaml", "--workspace", ws, "--set", "steps=1",
                "--set", "sample.prompts=[one]", "--set", "sample.steps=1", timeout=300)
    assert r.returncode == 0, r.stderr
    record = json.loads((ws / "run.json").read_text())
    from importlib.metadata import version

    for name in ("torch", "diffusers", "transformers", "peft", "safetensors"):
        assert record["versions"][name] == version(name)
    assert record["devices"] == {"train.device": "cpu -> cpu", "sample.device": "cpu -> cpu",
                                 "preview_settings.device": "cpu -> cpu"}


def test_outputs_inside_the_run_folder_cannot_escape_it(tmp_path, write_graph):
    graph = write_graph(f"""
name: escape
nodes:
  scan: {{type: util.scan_files, params: {{folder: {ROOT / 'assets' / 'demo_dataset'}}}}}
  manifest: {{type: util.write_manifest, in: {{files: scan.files}}, params: {{filename: /tmp/t/.bashrc}}}}
  up: {{type: util.write_manifest, in: {{files: scan.files}}, params: {{filename: ../../x.json}}}}
  sample: {{type: sd.sample, params: {{folder: ../../x}}}}
""")
    r = run_cli("validate", graph)
    assert r.returncode == 2
    assert "node 'manifest', param 'filename'" in r.stderr and "not inside the run folder" in r.stderr
    assert "node 'up', param 'filename'" in r.stderr and "leaves the run folder" in r.stderr
    assert "node 'sample', param 'folder'" in r.stderr
    ok = run_cli("run", graph, "--workspace", tmp_path / "ws", "--set", "manifest.filename=m/manifest.json",
                 "--set", "up.filename=./up.json", "--set", "sample.folder=s")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ws" / "m" / "manifest.json").is_file() and (tmp_path / "ws" / "up.json").is_file()
    events = parse_events((tmp_path / "ws" / "events.jsonl").read_text())
    assert {e["path"] for e in events if e["event"] == "saved"} == {
        str(tmp_path / "ws" / "m" / "manifest.json"), str(tmp_path / "ws" / "up.json")}


def test_ctx_path_refuses_to_leave_the_workspace(tmp_path):
    from runtime.context import RunContext
    from runtime.control import CancelToken, CommandInbox
    from runtime.events import EventBus

    cancel = CancelToken()
    ctx = RunContext("n", "t.n", EventBus(), cancel, CommandInbox(cancel), tmp_path / "ws")
    assert ctx.path("a", "b.txt") == tmp_path / "ws" / "a" / "b.txt"
    (tmp_path / "ws" / "link").symlink_to(tmp_path)
    for parts in (("..", "x"), ("/etc/passwd",), ("link", "x")):
        with pytest.raises(ValueError, match="outside the run folder"):
            ctx.path(*parts)


def test_a_param_that_is_not_utf8_is_refused_naming_it(tmp_path):
    bad = os.fsencode(str(tmp_path)) + b"/data\xfe"
    os.mkdir(bad)
    r = run_cli("run", ROOT / "graphs" / "quickstart.yaml", "--set", f"dataset={os.fsdecode(bad)}",
                "--workspace", tmp_path / "ws")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "input 'dataset'" in r.stderr and "not valid UTF-8" in r.stderr and "\\xfe" in r.stderr


def test_many_problems_print_a_bounded_list(write_graph):
    params = ", ".join(f"p{i}: 1" for i in range(80))
    graph = write_graph(f"name: many\nnodes:\n  a: {{type: test.const, params: {{{params}}}}}\n")
    r = run_cli("validate", graph)
    assert r.returncode == 2
    j = json.loads(run_cli("validate", graph, "--json").stdout)
    assert len(j["problems"]) > 80 and j["more_problems"] == 0
    assert r.stderr.count("unknown param") == 50 and f"... and {len(j['problems']) - 50} more" in r.stderr


def test_a_graph_has_a_bounded_number_of_nodes(registry):
    from runtime.errors import GraphFileError
    from runtime.graph_file import MAX_NODES, loads_graph

    text = "nodes:\n" + "".join(f"  n{i}: {{type: test.const}}\n" for i in range(MAX_NODES + 1))
    with pytest.raises(GraphFileError, match=f"at most {MAX_NODES} nodes"):
        loads_graph(text, registry)
    assert len(loads_graph(text.rsplit("\n  n", 1)[0] + "\n", registry).nodes) == MAX_NODES
