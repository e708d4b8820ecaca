"""File and folder names that are not valid UTF-8: skipped with a readable warning, never a failed run."""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest

from datagraph_helpers import graph_of, pipeline


def bytes_name(folder, name: bytes):
    """``folder``/``name`` as Python sees an undecodable name (surrogate escapes); skip where the
    file system refuses such names."""
    path = os.fsencode(folder) + b"/" + name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(path)
    except OSError as e:
        pytest.skip(f"this file system refuses non-UTF-8 names: {e}")
    return os.fsdecode(path)


def run_with_sinks(graph, registry, workspace):
    """Execute ``graph`` with every kind of event sink a run has: list, log file, JSON lines, console."""
    from runtime.console import ConsoleSink
    from runtime.events import EventBus, JsonLinesSink, ListSink
    from runtime.executor import execute
    from runtime.validate import validate
    from runtime.workspace import EventLog

    v = validate(graph, registry, [])
    assert v.ok, [str(p) for p in v.errors]
    events = ListSink()
    jsonl = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    console = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    log = EventLog(workspace / "events.jsonl")
    bus = EventBus([events, log, JsonLinesSink(jsonl), ConsoleSink(console)])
    try:
        result = execute(v, workspace=workspace, bus=bus)
    finally:
        log.close()
    jsonl.flush()
    return result, events, jsonl.buffer.getvalue().decode("utf-8"), (workspace / "events.jsonl").read_text("utf-8")


def data_graph(folder):
    return graph_of(pipeline(
        folder,
        bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source.size"}),
        crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}),
        tensor=("data.to_tensor", {}, {"image": "crop.image"}),
        cache=("data.ram_cache", {}, {"fields": ["tensor.image", "source.caption"]}),
        batches=("data.batches", {"batch_size": 2}, {"fields": ["cache.image", "cache.caption"],
                                                      "bucket": "bucket.bucket"}),
        consume=("testdata.consume", {}, {"batches": "batches.batches"})))


def test_a_file_with_a_non_utf8_name_is_skipped_with_a_warning(data_registry, clean_dataset, tmp_path):
    root = clean_dataset.root
    good = clean_dataset.good[0]
    bad = bytes_name(root, b"bad\xff.png")
    shutil.copyfile(good, bad)
    with open(bytes_name(root, b"bad\xff.txt"), "w") as f:
        f.write("bad, name")
    sub = bytes_name(root, b"sub\xfe")
    os.mkdir(sub)
    shutil.copyfile(good, os.path.join(sub, "inside.png"))
    with open(os.path.join(sub, "inside.txt"), "w") as f:
        f.write("inside a badly named folder")
    workspace = tmp_path / "run"
    workspace.mkdir()

    result, events, jsonl, logfile = run_with_sinks(data_graph(root), data_registry, workspace)
    assert result.error is None, result.error
    warnings = [e["message"] for e in events.of("log") if e.get("level") == "warning"]
    shown = f"{root}/bad\\xff.png"
    assert any(shown in w and "not valid UTF-8" in w for w in warnings), warnings
    assert any(f"{root}/sub\\xfe/inside.png" in w for w in warnings), warnings
    consumed = [e for e in events.of("log") if e["message"].startswith("consumed")]
    assert consumed and consumed[0]["items"] == len(clean_dataset.good), "the run goes on with the other files"
    for text in (jsonl, logfile):
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[-1]["event"] == "run_finished" and lines[-1]["status"] == "ok"
        assert any(e.get("path") == shown for e in lines)


def test_a_non_utf8_dataset_folder_is_refused_naming_the_param(data_registry, clean_dataset, tmp_path):
    folder = bytes_name(tmp_path, b"imgs\xff")
    shutil.copytree(clean_dataset.root, folder)
    from runtime.validate import validate

    [problem] = validate(data_graph(folder), data_registry, []).errors  # refused before anything runs
    assert (problem.node, problem.field) == ("concept", "param 'folder'")
    assert "not valid UTF-8" in problem.message and f"{tmp_path}/imgs\\xff" in problem.message
    assert "\n" not in str(problem)


def test_events_and_cache_keys_take_any_text():
    from runtime.data.item import stable_id
    from runtime.data.keys import _h
    from runtime.events import EventBus, ListSink, safe_text, to_json

    event = {"message": "skipped bad\udcff.png", "paths": ["x\ud800"], "k\udcfe": 1, "ok": "grün"}
    line = to_json(event)
    line.encode("utf-8")  # a JSON line is always writable as UTF-8
    assert json.loads(line) == {"message": "skipped bad\\xff.png", "paths": ["x\\ud800"], "k\\xfe": 1, "ok": "grün"}
    assert safe_text("grün") == "grün"
    sink = ListSink()
    EventBus([sink]).emit("log", message="bad\udcff", level="warning")
    assert sink.events[0]["message"] == "bad\\xff", "every sink sees writable text"
    assert _h("a\udcff") != _h("a\\xff") and _h("a\udcff") == _h("a\udcff")
    assert stable_id("node\udcff") != stable_id("node")
