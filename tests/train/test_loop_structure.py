"""train.loop stays readable top to bottom: small named functions, and a hot path that binds what it needs once."""

from __future__ import annotations

import ast
from pathlib import Path

import nodes.train.loop as loop_module

SOURCE = Path(loop_module.__file__)
MAX_LINES = 40
MAX_RUN_LINES = 25
#: the per-step methods of the loop (called once per batch or per update)
HOT_PATH = ("epoch", "micro_step", "forward", "update", "report", "after_update")


def functions(tree: ast.Module):
    """(qualified name, node) of every function and method in the module, nested ones included."""
    def walk(body, prefix):
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + n.name, n
                yield from walk(n.body, f"{prefix}{n.name}.")
            elif isinstance(n, ast.ClassDef):
                yield from walk(n.body, f"{prefix}{n.name}.")
    return list(walk(tree.body, ""))


def length(fn) -> int:
    return fn.end_lineno - fn.lineno + 1


def tree() -> ast.Module:
    return ast.parse(SOURCE.read_text(), str(SOURCE))


def test_every_function_of_the_loop_is_at_most_40_lines():
    found = functions(tree())
    assert len(found) > 5, [name for name, _ in found]
    long = {name: length(fn) for name, fn in found if length(fn) > MAX_LINES}
    assert not long, f"functions of nodes/train/loop.py over {MAX_LINES} lines: {long}"


def test_train_loop_run_reads_as_a_short_sequence_of_named_steps():
    run = dict(functions(tree()))["TrainLoop.run"]
    assert length(run) <= MAX_RUN_LINES, f"TrainLoop.run is {length(run)} lines (at most {MAX_RUN_LINES})"
    # it delegates: no loop of its own, and the epoch loop and the end are named functions it calls
    assert not [n for n in ast.walk(run) if isinstance(n, (ast.For, ast.While))]
    called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
              for n in ast.walk(run) if isinstance(n, ast.Call)}
    assert {"Steps", "train", "_finish", "_state", "resume"} <= called, called


def test_the_hot_path_walks_no_module_attributes_and_imports_nothing():
    """Per-step methods use what ``Steps.__init__`` bound (torch.isfinite, clip_grad_norm_), not ``torch.x.y``."""
    found = dict(functions(tree()))
    for name in HOT_PATH:
        fn = found[f"Steps.{name}"]
        imports = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"Steps.{name} imports at every step"
        torch_attrs = [ast.unparse(n) for n in ast.walk(fn)
                       if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "torch"]
        assert not torch_attrs, f"Steps.{name} walks {torch_attrs} at every step"
