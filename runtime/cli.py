"""The ``nodetrainer`` command line (also ``python -m runtime``)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # what a process killed by SIGPIPE reports
MAX_PROBLEMS_JSON = 1000

EPILOG = """\
examples:
  nodetrainer run graphs/quickstart.yaml
  nodetrainer run graphs/sd15-lora.yaml --set base_model=./sd15 --set dataset=./imgs --set train.max_steps=500
  nodetrainer run graph.yaml --events jsonl        # machine-readable events on stdout, commands on stdin
  nodetrainer run graph.yaml --resume last         # continue from the newest backup of this graph
  nodetrainer validate graph.yaml --set dataset=./imgs
  nodetrainer nodes
  nodetrainer nodes --describe train.loop
  nodetrainer preview graph.yaml crop --n 8 --out sheet.png   # first items at a data node

exit codes: 0 ok, 1 a node failed, 2 invalid graph or usage, 130 stopped (Ctrl-C, SIGTERM or a stop command)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodetrainer",
        description="Train diffusion models with node graphs: run, validate and inspect graph files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"nodetrainer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sets = argparse.ArgumentParser(add_help=False)
    sets.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="set a graph input (name=value) or a node param (node.param=value); repeatable. "
                           "Relative paths resolve against the current folder")
    sets.add_argument("--debug", action="store_true",
                      help="print tracebacks on the console (they are always in the run's events.jsonl)")

    run = sub.add_parser("run", parents=[sets], help="run a graph",
                         description="Validate a graph, then run the nodes its sinks need, in order.",
                         epilog="example:\n  nodetrainer run graphs/quickstart.yaml --set train.max_steps=20",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("graph", type=Path, help="graph file (YAML)")
    run.add_argument("--events", choices=["jsonl"], help="write events as JSON lines to stdout and read "
                     "commands ({\"command\": \"stop\"}) from stdin")
    run.add_argument("--workspace", type=Path, metavar="DIR", help="run folder (default: RUNS_DIR/<name>-<time>)")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="RUNS_DIR",
                     help="where new run folders go (default: ./runs)")
    run.add_argument("--resume", metavar="BACKUP", help="continue training from a backup folder, a run folder "
                     "(its newest backup) or 'last' (the newest backup of this graph under RUNS_DIR); the run "
                     "continues in the backup's run folder unless --workspace is given")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", parents=[sets], help="check a graph without running it",
                         description="Report every problem in a graph at once. Exit 0 when valid, 2 when not.",
                         epilog="example:\n  nodetrainer validate graphs/sd15-lora.yaml --set dataset=./imgs",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    val.add_argument("graph", type=Path, help="graph file (YAML)")
    val.add_argument("--for-run", action="store_true",
                     help="also require values for all graph inputs and existing input files")
    val.add_argument("--json", action="store_true", help="print the problems as JSON")
    val.set_defaults(func=cmd_validate)

    nodes = sub.add_parser("nodes", help="list node types, or describe one",
                           description="The node catalogue, grouped by category.",
                           epilog="examples:\n  nodetrainer nodes\n  nodetrainer nodes --describe train.loop",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    nodes.add_argument("--describe", metavar="TYPE", help="show one node type's ports, params and docs")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    nodes.set_defaults(func=cmd_nodes)

    edit = sub.add_parser("edit", help="open the desktop graph editor",
                          description="Open the Qt graph editor (needs PySide6 and NodeGraphQt).",
                          epilog="example:\n  nodetrainer edit graphs/quickstart.yaml",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    edit.add_argument("graph", nargs="?", type=Path, help="graph file to open")
    edit.add_argument("--runs-dir", type=Path, metavar="RUNS_DIR",
                      help="where runs started from the editor go (default: ./runs)")
    edit.set_defaults(func=cmd_edit)

    prev = sub.add_parser("preview", parents=[sets], help="show the first items at a data node",
                          description="Run what a data node needs, evaluate its first items and print them; "
                                      "--out writes a contact sheet (images with captions and sizes).",
                          epilog="example:\n  nodetrainer preview graph.yaml crop --n 8 --out sheet.png",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    prev.add_argument("graph", type=Path, help="graph file (YAML)")
    prev.add_argument("node", help="id of the data node to preview")
    prev.add_argument("--n", type=int, default=8, help="number of items (default 8)")
    prev.add_argument("--out", type=Path, metavar="SHEET", help="write a contact sheet image (.png/.jpg)")
    prev.add_argument("--epoch", type=int, default=0, help="epoch to evaluate (default 0)")
    prev.add_argument("--seed", type=int, help="run seed (default: the batches node's seed, else 0)")
    prev.add_argument("--json", action="store_true", help="print the items as JSON")
    prev.set_defaults(func=cmd_preview)

    from .cli_interop import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INVALID
    from .console import one_line
    from .workspace import WorkspaceError

    try:
        return args.func(args)
    except BrokenPipeError:  # the reader of our output went away (`nodetrainer nodes --json | head`)
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except WorkspaceError as e:
        _err(str(e))
        return EXIT_INVALID
    except Exception as e:  # a bug, not a user mistake: one line, the traceback on request
        if getattr(args, "debug", False):
            raise
        _err(f"nodetrainer: internal error: {type(e).__name__}: {one_line(str(e), 500)} (run again with --debug "
             f"for the traceback, and please report it)")
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load(path: Path, registry):
    from .errors import GraphFileError
    from .graph_file import load_graph

    try:
        graph = load_graph(path, registry)
    except GraphFileError as e:
        _err(str(e))
        return None
    for msg in graph.upgrades:
        _err(f"note: {msg}")
    return graph


def _print_problems(problems, stream=None) -> None:
    from .errors import MAX_PROBLEMS_SHOWN

    stream = stream or sys.stderr
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  - {p}", file=stream)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more (validate --json lists up to "
              f"{MAX_PROBLEMS_JSON})", file=stream)


# -- validate -----------------------------------------------------------------

def cmd_validate(args) -> int:
    from .registry import default_registry
    from .validate import validate

    registry = default_registry()
    graph = _load(args.graph, registry)
    if graph is None:
        return EXIT_INVALID
    result = validate(graph, registry, args.sets, for_run=args.for_run)
    if args.json:
        shown = result.problems[:MAX_PROBLEMS_JSON]
        print(json.dumps({"valid": result.ok, "problems": [p.to_dict() for p in shown],
                          "more_problems": len(result.problems) - len(shown), "plan": result.order}, indent=2))
        return EXIT_OK if result.ok else EXIT_INVALID
    if result.ok:
        print(f"{args.graph}: valid ({len(graph.nodes)} nodes, {len(result.order)} would run)")
        _print_problems(result.warnings, sys.stdout)
        return EXIT_OK
    _err(f"{args.graph}: {len(result.errors)} problem(s)")
    _print_problems(result.problems)
    return EXIT_INVALID


# -- nodes --------------------------------------------------------------------

def cmd_nodes(args) -> int:
    from .registry import default_registry

    registry = default_registry()
    for err in registry.load_errors:
        _err(f"warning: {err}")
    if args.describe:
        spec = registry.get(args.describe.split("@")[0])
        if spec is None:
            near = registry.suggest(args.describe)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            _err(f"unknown node type {args.describe!r}{hint}")
            return EXIT_INVALID
        if args.json:
            print(json.dumps(spec.describe(), indent=2))
        else:
            print(describe_text(spec))
        return EXIT_OK
    if args.json:
        print(json.dumps({"nodes": [s.describe() for s in registry.specs()],
                          "types": [t.describe() for t in registry.types()]}, indent=2))
        return EXIT_OK
    for category, specs in registry.by_category().items():
        print(category)
        width = max(len(s.qualified) for s in specs)
        for s in specs:
            print(f"  {s.qualified:<{width}}  {s.title}: {s.summary}")
    return EXIT_OK


def describe_text(spec) -> str:
    lines = [f"{spec.qualified}  {spec.title}  [{spec.category}]"]
    if spec.doc:
        lines += ["", spec.doc.strip()]

    def port_line(p, is_input: bool) -> str:
        t = p.type
        flags = []
        if is_input:
            flags.append("optional" if p.optional else "required")
            if p.multi:
                flags.append("multi")
        flags.append(t.lifetime)
        if getattr(p, "follows", None):
            flags.append(f"the type of what feeds {p.follows}")
        served = getattr(p, "serves", None)
        if isinstance(served, str):
            flags.append(f"serves the models that what feeds {served} serves")
        elif served is not None:
            flags.append(f"serves {served.name} models")
        return f"  {p.name}: {t.name} ({', '.join(flags)})" + (f"  {p.doc}" if p.doc else "")

    if spec.inputs:
        lines += ["", "Inputs:"] + [port_line(p, True) for p in spec.inputs.values()]
    if spec.outputs:
        lines += ["", "Outputs:"] + [port_line(p, False) for p in spec.outputs.values()]
    if spec.params:
        lines += ["", "Params:"]
        for p in spec.params.values():
            d = p.describe()
            extra = []
            if "options" in d:
                extra.append("one of " + ", ".join(d["options"]))
            if "mode" in d:
                extra.append(f"{d['mode']} " + " or ".join({"dir": "folder"}.get(k, k) for k in d.get("picks", []))
                             if d.get("picks") else d["mode"])
            if p.min is not None or p.max is not None:
                extra.append(f"range {'' if p.min is None else p.min}..{'' if p.max is None else p.max}")
            if p.optional:
                extra.append("optional")
            default = "required" if p.required else f"default {p.default!r}"
            lines.append(f"  {p.name}: {p.kind.name}, {default}" + (f", {'; '.join(extra)}" if extra else "")
                         + (f"  {p.doc}" if p.doc else ""))
    return "\n".join(lines)


# -- edit ---------------------------------------------------------------------

def cmd_edit(args) -> int:
    try:
        from editor.app import main as editor_main  # Qt is imported only here
    except ImportError as e:
        _err(f"the editor needs PySide6 and NodeGraphQt: {e}")
        return EXIT_INVALID
    argv = [str(args.graph)] if args.graph else []
    if args.runs_dir:
        argv += ["--runs-dir", str(args.runs_dir)]
    return editor_main(argv)


# -- preview ------------------------------------------------------------------

def cmd_preview(args) -> int:
    from .data.preview import cli_preview  # PIL and torch are imported only when items are evaluated

    return cli_preview(args)


# -- run ----------------------------------------------------------------------

@contextlib.contextmanager
def _event_stream() -> Iterator[io.TextIOBase]:
    """Stdout reserved for events: anything else printed (by Python or C code) goes to stderr."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = -1
    if fd != 1:  # stdout is not the process's fd 1 (e.g. captured in-process); keep it simple
        real, sys.stdout = sys.stdout, sys.stderr
        try:
            yield real
        finally:
            sys.stdout = real
        return
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    stream = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    try:
        yield stream
    finally:
        stream.flush()
        os.dup2(events_fd, 1)
        stream.close()


def _workspace(args, graph, resume) -> Path:
    """The run folder: ``--workspace`` (checked, never another folder's files overwritten), the resumed
    backup's run folder, or a new one under ``--runs-dir``."""
    from .backups import workspace_of
    from .workspace import create_workspace, prepare_workspace

    if args.workspace:
        return prepare_workspace(Path(os.path.abspath(args.workspace)))
    if resume is not None:
        return prepare_workspace(workspace_of(resume), "the resumed run folder")
    return create_workspace(Path(os.path.abspath(args.runs_dir)), graph.name)


def _torchrun_ranks() -> tuple[int, int]:
    """(rank, world size) torchrun gave this process; (0, 1) when it was not started by torchrun."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


def _join_ranks() -> bool:
    """Join the process group of a torchrun start (gloo for CPU tensors; NCCL beside it on a CUDA machine,
    each rank on GPU LOCAL_RANK). True when this call initialised it."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return True


def _shared_workspace(args, graph, resume, rank: int, world: int, argv: list[str]):
    """``(run folder, backup to resume from, lock)``, the folder and backup the same on every rank: rank 0
    picks the folder (``_workspace``), locks it and sends both paths to the others, which make the folder
    on their own machine (rank-N.log goes there; their lock does nothing). ``(None, None, None)`` on the
    other ranks when rank 0 could not use the folder (rank 0 raises and says why)."""
    from .workspace import RunLock, WorkspaceError

    if world == 1:
        workspace = _workspace(args, graph, resume)
        return workspace, resume, RunLock(workspace).acquire(argv)
    import torch.distributed as dist

    box: list = [None]
    lock = contextlib.nullcontext()
    if rank == 0:
        try:
            workspace = _workspace(args, graph, resume)
            lock = RunLock(workspace).acquire(argv)
            box = [(str(workspace), str(resume) if resume is not None else None)]
        except WorkspaceError as e:
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        if rank == 0:
            raise WorkspaceError(box[0][1])
        return None, None, None
    return Path(box[0][0]), (Path(box[0][1]) if box[0][1] is not None else None), lock


def _local_problem(workspace: Path, resume: Path | None, rank: int) -> str | None:
    """On a rank other than 0: make the run folder on this machine (a machine of its own has no copy of
    rank 0's), and check that rank 0's backup is here too; None when all is well, else why not."""
    import socket

    from .workspace import os_reason

    if rank == 0:
        return None
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"run folder {workspace} cannot be made on this machine: {os_reason(e)}"
    if resume is not None and not resume.is_dir():
        return (f"--resume: the backup {resume} (rank 0's choice) is not on this machine "
                f"({socket.gethostname()}); every machine reads the backup: put the runs folder on a shared "
                f"filesystem, or copy the run folder to the same path here")
    return None


def _every_rank_ready(ready: bool, rank: int, world: int, said: str | None = None) -> bool:
    """True when every rank is ready to run (a collective; a rank that is not has said why), so that a
    rank that cannot start (its graph, data or backup missing on its machine) stops every rank at once
    instead of leaving them waiting for it in a collective. ``said``: what this rank held back to say
    (its validation); rank 0 says its own and every other rank's that differs (prefixed with the rank),
    and a rank whose text differs from rank 0's says it too, so N ranks of one graph say it once."""
    if world == 1:
        return ready
    import torch.distributed as dist

    gathered: list = [None] * world
    dist.all_gather_object(gathered, (not ready, said or ""))
    failed = [r for r, (bad, _) in enumerate(gathered) if bad]
    _say_once(rank, [text for _, text in gathered])
    if failed and ready:
        _err(f"nodetrainer: rank {', '.join(map(str, failed))} could not start the run (its output says why); "
             f"every rank stops")
    return not failed


def _say_once(rank: int, texts: list[str]) -> None:
    """Print what the ranks held back, each text once (see ``_every_rank_ready``)."""
    mine, first = texts[rank], texts[0]
    if rank == 0:
        sys.stderr.write(first)
        for r, text in enumerate(texts[1:], start=1):
            if text and text != first:
                sys.stderr.write("".join(f"rank {r}: {line}\n" for line in text.splitlines()))
    elif mine != first:
        sys.stderr.write(mine)
    sys.stderr.flush()


def _start_quietly(args, registry, rank: int, world: int):
    """``_start`` with what it says held back under torchrun (for ``_every_rank_ready`` to say once);
    ``(started, text)``."""
    # before anything a rank can fail on alone: every rank takes part in this collective
    seeds = _shared_seed_source(world)
    if world == 1:
        return _start(args, registry, rank, seeds), None
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            started = _start(args, registry, rank, seeds)
    except BaseException:
        sys.stderr.write(held.getvalue())  # nothing held back is lost when this rank fails outright
        raise
    return started, held.getvalue()


def cmd_run(args) -> int:
    rank, world = _torchrun_ranks()
    joined = world > 1 and _join_ranks()
    try:
        return _run(args, rank, world)
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()


def _shared_seed_source(world: int) -> int | None:
    """Under torchrun, rank 0's random number that every rank derives its ``seed: -1`` values from (a
    collective), so all ranks shuffle and draw alike; None for one process (fresh seeds)."""
    if world == 1:
        return None
    import secrets

    import torch.distributed as dist

    box = [secrets.randbits(63)]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def _start(args, registry, rank: int, random_seeds: int | None = None):
    """The graph, its validation and (on rank 0) the backup to resume from; None, after saying why, when
    the run cannot start here."""
    from .validate import validate

    graph = _load(args.graph, registry)
    if graph is None:
        return None
    result = validate(graph, registry, args.sets, for_run=True, random_seeds=random_seeds)
    if not result.ok:
        _err(f"{args.graph}: cannot run, {len(result.errors)} problem(s)")
        _print_problems(result.problems)
        return None
    if rank == 0:
        _print_problems(result.warnings)
    resume = None
    if args.resume and rank == 0:  # rank 0's choice, which the others are sent
        from .backups import resolve_resume

        try:
            resume = resolve_resume(args.resume, args.runs_dir.resolve(), graph.name,
                                    args.workspace.resolve() if args.workspace else None)
        except (FileNotFoundError, ValueError) as e:
            _err(f"--resume: {e}")
            return None
        _err(f"resuming from {resume}")
    return graph, result, resume


def _run(args, rank: int, world: int) -> int:
    """``cmd_run`` on one rank: rank 0 (or the only process) writes the run record, the events and the
    console; another rank logs to its ``rank-N.log`` in the same run folder."""
    from .console import ConsoleSink
    from .control import CancelToken, CommandInbox, signal_handlers, start_command_reader
    from .events import EventBus, JsonLinesSink
    from .executor import ABORTED, CANCELLED, OK, execute
    from .registry import default_registry
    from .workspace import EVENTS_FILE, EventLog, RankLog, rank_log_name, write_run_record

    registry = default_registry()
    started, said = _start_quietly(args, registry, rank, world)
    if not _every_rank_ready(started is not None, rank, world, said):
        return EXIT_INVALID
    graph, result, resume = started
    argv = sys.argv[1:] if sys.argv else []
    workspace, resume, lock = _shared_workspace(args, graph, resume, rank, world, argv)
    if workspace is None:
        return EXIT_INVALID
    problem = _local_problem(workspace, resume, rank)
    if problem:
        _err(f"rank {rank}: {problem}")
    if not _every_rank_ready(not problem, rank, world):
        lock.__exit__(None, None, None)
        return EXIT_INVALID
    with lock, contextlib.ExitStack() as stack:
        cancel = CancelToken()
        inbox = CommandInbox(cancel)
        if rank:
            bus = EventBus([stack.enter_context(contextlib.closing(RankLog(workspace / rank_log_name(rank))))])
        else:
            write_run_record(workspace, graph, result, argv, registry)
            bus = EventBus([stack.enter_context(contextlib.closing(EventLog(workspace / EVENTS_FILE)))])
            if args.events == "jsonl":
                stream = stack.enter_context(_event_stream())
                bus.add(JsonLinesSink(stream))
                start_command_reader(sys.stdin, inbox, bus)
            else:
                bus.add(ConsoleSink(debug=args.debug))
        stack.enter_context(signal_handlers(cancel))
        try:
            outcome = execute(result, workspace=workspace, bus=bus, cancel=cancel, inbox=inbox,
                              graph_name=graph.name, resume=resume)
        except KeyboardInterrupt:  # a second interrupt landing between nodes
            bus.emit("run_finished", status=ABORTED, seconds=0.0, workspace=str(workspace))
            return EXIT_CANCELLED
    if outcome.status == OK:
        return EXIT_OK
    if outcome.status in (CANCELLED, ABORTED):
        return EXIT_CANCELLED
    return EXIT_FAILED
