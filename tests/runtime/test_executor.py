"""The executor: plan, order, run once, failures, cancellation, commands, freeing outputs."""

import gc
import json
import weakref


from runtime import Input, Output, Param, node
from runtime.control import CancelToken, CommandInbox
from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph_file import loads_graph
from runtime.port_types import value_type
from runtime.registry import Registry
from runtime.validate import validate


def run(text, registry, tmp_path, **kw):
    g = loads_graph(text, registry)
    v = validate(g, registry, for_run=True)
    assert v.ok, v.problems
    sink = ListSink()
    result = execute(v, workspace=tmp_path, bus=EventBus([sink]), **kw)
    return result, sink


def test_runs_needed_nodes_once_in_dependency_order(registry, tmp_path):
    result, sink = run("""
nodes:
  out: {type: test.record, in: {value: sum.total}, params: {label: r}}
  sum: {type: test.sum, in: {values: [a.value, add.total]}}
  add: {type: test.add, in: {a: a.value, b: b.value}}
  a: {type: test.const, params: {number: 2}}
  b: {type: test.const, params: {number: 3}}
  unused: {type: test.const}
""", registry, tmp_path)
    assert result.ok
    started = [e["node"] for e in sink.of("node_started")]
    assert sorted(started) == ["a", "add", "b", "out", "sum"], "the dangling node is not run"
    assert started.index("a") < started.index("add") < started.index("sum") < started.index("out")
    assert json.loads((tmp_path / "result-r.json").read_text()) == {"value": 7.0}
    kinds = [e["event"] for e in sink.events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert sink.of("run_finished")[0]["status"] == "ok"
    assert sink.of("saved")[0]["path"].endswith("result-r.json")


def test_a_failure_names_node_type_and_cause_and_stops_the_run(registry, tmp_path):
    result, sink = run("""
nodes:
  a: {type: test.const}
  bad: {type: test.fail, in: {value: a.value}, params: {message: disk on fire}}
  out: {type: test.record, in: {value: a.value}}
""", registry, tmp_path)
    assert result.status == "failed"
    assert result.error.node_id == "bad" and result.error.type_id == "test.fail"
    err = sink.of("error")[0]
    assert err["node"] == "bad" and err["type"] == "test.fail"
    assert err["message"] == "node 'bad' (test.fail) failed: ValueError: disk on fire"
    assert "Traceback" in err["traceback"]
    assert "out" not in [e["node"] for e in sink.of("node_started")]
    assert sink.of("run_finished")[0]["status"] == "failed"


def at_step(step, action):
    """An event sink that calls ``action`` once the running node reports progress ``step``."""
    from runtime.events import CallbackSink

    return CallbackSink(lambda e: action() if e["event"] == "progress" and e["step"] == step else None)


def test_cancellation_is_polled_by_the_running_node(registry, tmp_path):
    cancel = CancelToken()
    g = loads_graph("nodes: {w: {type: test.wait, params: {steps: 500, delay: 0.01}}}", registry)
    sink = ListSink()
    bus = EventBus([sink, at_step(5, lambda: cancel.request("test stop"))])
    result = execute(validate(g, registry, for_run=True), workspace=tmp_path, bus=bus, cancel=cancel)
    record = json.loads((tmp_path / "commands.json").read_text())
    assert result.status == "cancelled" and record["cancelled"] and record["steps"] == 5
    assert sink.of("run_finished")[0]["reason"] == "test stop"
    assert len(sink.of("progress")) == 5


def test_commands_reach_the_running_node_and_stop_cancels(registry, tmp_path):
    cancel = CancelToken()
    inbox = CommandInbox(cancel)
    inbox.put({"command": "sample"})  # waits in the inbox until the node reads it
    g = loads_graph("nodes: {w: {type: test.wait, params: {steps: 500, delay: 0.01}}}", registry)
    bus = EventBus([at_step(3, lambda: inbox.put({"command": "stop"}))])
    result = execute(validate(g, registry, for_run=True), workspace=tmp_path, bus=bus, cancel=cancel, inbox=inbox)
    record = json.loads((tmp_path / "commands.json").read_text())
    assert record["commands"] == ["sample", "stop"] and record["steps"] == 3
    assert result.status == "cancelled"


def test_a_run_cancelled_before_a_node_does_not_start_it(registry, tmp_path):
    cancel = CancelToken()
    cancel.request("early")
    result, sink = run("nodes: {out: {type: test.record}}", registry, tmp_path, cancel=cancel)
    assert result.status == "cancelled" and not sink.of("node_started")


Blob = value_type("ExecBlob")


class Payload:
    pass


def test_outputs_are_released_after_their_last_consumer(tmp_path):
    refs = []

    @node("x.make", title="Make", category="Test")
    class Make:
        out = Output(Blob, doc="o")

        def run(self, ctx):
            p = Payload()
            refs.append(weakref.ref(p))
            return {"out": p}

    @node("x.use", title="Use", category="Test")
    class Use:
        blob = Input(Blob, doc="b")
        done = Output(Blob, doc="d")

        def run(self, ctx, blob):
            return {"done": 1}

    @node("x.check", title="Check", category="Test")
    class Check:
        done = Input(Blob, doc="d")

        def run(self, ctx, done):
            gc.collect()
            assert refs[0]() is None, "the payload is still alive after its only consumer ran"

    reg = Registry()
    for cls in (Make, Use, Check):
        reg.register(cls)
    result, _ = run("nodes: {m: {type: x.make}, u: {type: x.use, in: {blob: m.out}}, c: {type: x.check, in: {done: u.done}}}",
                    reg, tmp_path)
    assert result.ok, result.error


def test_targets_and_keep_run_only_what_a_node_needs(registry, tmp_path):
    g = loads_graph("""
nodes:
  a: {type: test.const, params: {number: 4}}
  add: {type: test.add, in: {a: a.value}}
  out: {type: test.fail, in: {value: add.total}}
""", registry)
    v = validate(g, registry)
    result = execute(v, workspace=tmp_path, targets=("add",), keep=("add",))
    assert result.ok and result.outputs == {"add": {"total": 4.0}}


def test_bad_return_values_fail_the_node(tmp_path):
    @node("x.liar", title="Liar", category="Test")
    class Liar:
        out = Output(Blob, doc="o")
        mode = Param(str, "none", doc="what to return")

        def run(self, ctx):
            return {"none": None, "extra": {"out": 1, "other": 2}, "missing": {}}[self.mode]

    @node("x.sink", title="Sink", category="Test")
    class Sink:
        blob = Input(Blob, doc="b")

        def run(self, ctx, blob):
            return None

    reg = Registry()
    reg.register(Liar)
    reg.register(Sink)
    for mode, needle in [("none", "returned NoneType"), ("extra", "undeclared output(s) other"),
                         ("missing", "missing output(s) out")]:
        result, _ = run(f"nodes: {{l: {{type: x.liar, params: {{mode: {mode}}}}}, s: {{type: x.sink, in: {{blob: l.out}}}}}}",
                        reg, tmp_path)
        assert result.status == "failed" and needle in str(result.error)
