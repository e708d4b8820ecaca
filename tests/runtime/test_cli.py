"""The command line, run as a subprocess: run / validate / nodes, events, stdin commands, signals."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, parse_events, run_cli, subprocess_env

VALID = """
name: CLI test
inputs:
  n: {type: float, default: 2.0}
nodes:
  a: {type: test.const, params: {number: "${n}"}}
  out: {type: test.record, in: {value: a.value}, params: {label: cli, noisy: true}}
"""


def test_version_and_help_with_examples():
    from runtime import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"nodetrainer {__version__}"
    r = run_cli("--help")
    assert r.returncode == 0
    for text in ("run", "validate", "nodes", "examples:", "--set base_model=", "exit codes"):
        assert text in r.stdout
    assert "--events" in run_cli("run", "--help").stdout


def test_console_script_behaves_like_python_m_runtime():
    script = Path(sys.executable).with_name("nodetrainer")
    assert script.exists(), "the nodetrainer console script is installed beside the interpreter"
    a = subprocess.run([str(script), "nodes"], capture_output=True, text=True, env=subprocess_env(), cwd=ROOT)
    b = run_cli("nodes")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_nodes_lists_by_category_and_describes_one():
    out = run_cli("nodes").stdout
    assert "Utility\n" in out and "  util.scan_files@1" in out
    assert "Test\n" in out and "test.const@1" in out, "the entry-point pack is listed"
    d = run_cli("nodes", "--describe", "test.params")
    assert d.returncode == 0
    for text in ("test.params@1", "Params:", "i: int, default 3, range 0..10", "c: choice", "one of red, green",
                 "dest: file", "save"):
        assert text in d.stdout
    j = json.loads(run_cli("nodes", "--describe", "test.add", "--json").stdout)
    assert [i["name"] for i in j["inputs"]] == ["a", "b"] and j["inputs"][1]["optional"]
    bad = run_cli("nodes", "--describe", "test.cnst")
    assert bad.returncode == 2 and "did you mean test.const" in bad.stderr


def test_validate_exit_codes(write_graph):
    good = write_graph(VALID)
    r = run_cli("validate", good)
    assert r.returncode == 0 and "valid (2 nodes, 2 would run)" in r.stdout
    bad = write_graph(VALID.replace("test.const", "test.cnst").replace("${n}", "${m}"), "bad.yaml")
    r = run_cli("validate", bad)
    assert r.returncode == 2
    assert "unknown node type 'test.cnst'" in r.stderr and "undeclared graph input ${m}" in r.stderr
    assert run_cli("validate", good, "--set", "n=abc").returncode == 2
    broken = write_graph("nodes: [", "broken.yaml")
    r = run_cli("validate", broken)
    assert r.returncode == 2 and "YAML syntax" in r.stderr
    j = json.loads(run_cli("validate", bad, "--json").stdout)
    assert not j["valid"] and {p["code"] for p in j["problems"]} >= {"unknown_type", "undeclared_input"}


def test_run_with_jsonl_events_keeps_stdout_clean_and_writes_the_workspace(write_graph, tmp_path):
    graph = write_graph(VALID)
    ws = tmp_path / "ws"
    r = run_cli("run", graph, "--events", "jsonl", "--workspace", ws, "--set", "n=5", input="")
    assert r.returncode == 0, r.stderr
    events = parse_events(r.stdout)  # every stdout line is JSON although the node printed
    assert "noise from print()" in r.stderr and "noise from fd 1" in r.stderr
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {"node_started", "node_finished", "saved"} <= set(kinds)
    assert events[-1]["status"] == "ok"
    assert json.loads((ws / "result-cli.json").read_text()) == {"value": 5.0}
    logged = parse_events((ws / "events.jsonl").read_text())
    assert [e["event"] for e in logged] == kinds
    # the graph as run: overrides applied, versions pinned, runs again from anywhere
    as_run = (ws / "graph.yaml").read_text()
    assert "type: test.const@1" in as_run and "number: 5.0" in as_run and "${n}" not in as_run
    again = run_cli("run", ws / "graph.yaml", "--workspace", tmp_path / "ws2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    record = json.loads((ws / "run.json").read_text())
    assert record["overrides"] == ["n=5"] and record["plan"] == ["a", "out"]


def test_default_workspace_is_runs_name_timestamp(write_graph, tmp_path):
    graph = write_graph(VALID)
    r = run_cli("run", graph, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("cli-test-") and (run_dir / "events.jsonl").exists()
    assert "[2/2] out (test.record)" in r.stderr and "Run ok" in r.stderr


def test_node_failure_exits_1_with_the_error_event(write_graph, tmp_path):
    graph = write_graph(VALID.replace("test.record", "test.fail").replace("label: cli, noisy: true", "message: nope"))
    r = run_cli("run", graph, "--events", "jsonl", "--workspace", tmp_path / "ws", input="")
    assert r.returncode == 1
    err = [e for e in parse_events(r.stdout) if e["event"] == "error"][0]
    assert err["node"] == "out" and err["type"] == "test.fail" and "ValueError: nope" in err["message"]


def test_invalid_graph_does_not_run(write_graph, tmp_path):
    graph = write_graph(VALID.replace("${n}", "${m}"))
    r = run_cli("run", graph, "--workspace", tmp_path / "ws")
    assert r.returncode == 2 and "cannot run" in r.stderr and not (tmp_path / "ws").exists()


WAIT = """
name: wait
nodes:
  w: {type: test.wait, params: {steps: 3000, delay: 0.01, honour_cancel: %s}}
"""


def _start(graph, ws, events=True):
    args = [sys.executable, "-m", "runtime", "run", str(graph), "--workspace", str(ws)]
    if events:
        args += ["--events", "jsonl"]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd=ROOT)


def _wait_for_progress(ws, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = ws / "events.jsonl"
        if log.exists() and '"progress"' in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("the run never reported progress")


def test_stdin_commands_reach_the_node_and_stop_ends_the_run(write_graph, tmp_path):
    ws = tmp_path / "ws"
    p = _start(write_graph(WAIT % "true"), ws)
    _wait_for_progress(ws)
    p.stdin.write('{"command": "sample"}\nnot json\n{"command": "dance"}\n')
    p.stdin.flush()
    time.sleep(0.2)
    p.stdin.write('{"command": "stop"}\n')
    p.stdin.flush()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    record = json.loads((ws / "commands.json").read_text())
    assert record["commands"] == ["sample", "stop"] and record["cancelled"]
    events = parse_events(out)
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "cancelled"
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert any("not JSON" in w for w in warnings) and any("unknown command 'dance'" in w for w in warnings)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_first_signal_stops_gracefully(write_graph, tmp_path, sig):
    ws = tmp_path / "ws"
    p = _start(write_graph(WAIT % "true"), ws, events=False)
    _wait_for_progress(ws)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "stopping after the current step" in err
    record = json.loads((ws / "commands.json").read_text())
    assert record["cancelled"] and record["steps"] < 3000, "the node finished its step and returned"
    last = parse_events((ws / "events.jsonl").read_text())[-1]
    assert last["event"] == "run_finished" and last["status"] == "cancelled"


def test_second_signal_aborts(write_graph, tmp_path):
    ws = tmp_path / "ws"
    p = _start(write_graph(WAIT % "false"), ws, events=False)
    _wait_for_progress(ws)
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert p.poll() is None, "a node that ignores the stop request keeps running after one signal"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    last = parse_events((ws / "events.jsonl").read_text())[-1]
    assert last["status"] == "aborted"
    assert not (ws / "commands.json").exists()
