"""Graph-file benchmark: load, validate and save a generated 500-node graph.

Prints the median of several runs for each, next to a baseline measured in the
same run (the bare libyaml parse / dump of the same file), and the targets
(load <= 150 ms, validate <= 50 ms).

    python benchmarks/bench_graph.py [--nodes 500] [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime import Choice, File, Input, Output, Param, StrList, node  # noqa: E402
from runtime.graph import Graph  # noqa: E402
from runtime.graph_file import dumps_graph, load_graph, save_graph  # noqa: E402
from runtime.port_types import value_type  # noqa: E402
from runtime.registry import Registry  # noqa: E402
from runtime.validate import validate  # noqa: E402

KINDS = 20


def build_registry() -> Registry:
    """KINDS synthetic node types with the usual mix of ports and params."""
    reg = Registry()
    thing = value_type("BenchThing")
    for k in range(KINDS):
        members = {
            "__doc__": f"Synthetic node {k}.",
            "a": Input(thing, doc="first"),
            "b": Input(thing, doc="more", optional=True, multi=True),
            "out": Output(thing, doc="result"),
            "rank": Param(int, 16, min=1, max=1024, doc="an int"),
            "lr": Param(float, 1e-4, min=0, doc="a float"),
            "mode": Param(Choice("a", "b", "c"), "a", doc="a choice"),
            "path": Param(File(), optional=True, doc="a file"),
            "prompts": Param(StrList, ["a photo"], doc="prompts"),
            "enabled": Param(bool, True, doc="a flag"),
            "run": lambda self, ctx, a, b: {"out": a},
        }
        if k == 0:  # a source
            del members["a"]
            members["run"] = lambda self, ctx, b: {"out": 0}
        reg.register(node(f"bench.kind{k}", title=f"Kind {k}", category="Bench")(type(f"Kind{k}", (), members)))
    return reg


def build_graph(n: int) -> Graph:
    g = Graph(name="bench", description="generated")
    g.inputs = {}
    for i in range(n):
        kind = 0 if i < 5 else 1 + i % (KINDS - 1)
        g.add_node(f"n{i}", f"bench.kind{kind}", 1,
                   params={"rank": 4 + i % 60, "lr": 1e-4 * (1 + i % 7), "mode": "abc"[i % 3],
                           "prompts": [f"prompt {i}", "second"]},
                   pos=(i % 25 * 260, i // 25 * 160))
        if kind:
            g.connect(f"n{i - 1 - i % 5}", "out", f"n{i}", "a")
            if i % 4 == 0:
                g.connect(f"n{i - 2}", "out", f"n{i}", "b", multi=True)
                g.connect(f"n{i - 3}", "out", f"n{i}", "b", multi=True)
    return g


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()

    reg = build_registry()
    graph = build_graph(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        save_graph(graph, path, reg)
        text = path.read_text()
        loaded = load_graph(path, reg)
        result = validate(loaded, reg)
        assert result.ok, result.problems[:5]
        assert dumps_graph(loaded, reg) == text

        base_load = median_ms(lambda: yaml.load(path.read_text(), Loader=yaml.CSafeLoader), args.repeat)
        load = median_ms(lambda: load_graph(path, reg), args.repeat)
        val = median_ms(lambda: validate(loaded, reg), args.repeat)
        data = yaml.load(text, Loader=yaml.CSafeLoader)
        base_save = median_ms(lambda: yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False), args.repeat)
        save = median_ms(lambda: save_graph(loaded, path, reg), args.repeat)

    print(f"graph: {args.nodes} nodes, {sum(len(e.links()) for e in graph.nodes.values())} edges, "
          f"{len(text) / 1024:.0f} KiB of YAML; median of {args.repeat} runs")
    print(f"{'':10}{'nodetrainer':>14}{'baseline':>12}{'ratio':>8}  target")
    print(f"{'load':10}{load:>11.1f} ms{base_load:>9.1f} ms{load / base_load:>7.2f}x  <= 150 ms  "
          f"({'ok' if load <= 150 else 'MISSED'}; baseline: bare libyaml safe_load)")
    print(f"{'validate':10}{val:>11.1f} ms{'':>12}{'':>8}  <= 50 ms   ({'ok' if val <= 50 else 'MISSED'})")
    print(f"{'save':10}{save:>11.1f} ms{base_save:>9.1f} ms{save / base_save:>7.2f}x  "
          f"(baseline: bare libyaml safe_dump; ours also writes atomically)")


if __name__ == "__main__":
    main()
