"""``nodetrainer import onetrainer`` and ``nodetrainer export onetrainer``: other trainers' configs as graphs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_INVALID = 0, 2


def add_parsers(sub) -> None:
    imp = sub.add_parser("import", help="turn another trainer's config into a graph",
                         description="Read a OneTrainer training config (a saved config of any version, or a "
                                     "preset) with its concepts and samples, and write the graph. Every setting "
                                     "that differs from OneTrainer's default is mapped to a node param, not "
                                     "needed, or reported unsupported with the reason.",
                         epilog="example:\n  nodetrainer import onetrainer my-config.json -o my-graph.yaml --report",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("tool", choices=["onetrainer"], help="the trainer the config comes from")
    imp.add_argument("config", type=Path, help="the config (JSON)")
    imp.add_argument("--concepts", type=Path, metavar="FILE", help="concepts file (default: the config's own)")
    imp.add_argument("--samples", type=Path, metavar="FILE", help="samples file (default: the config's own)")
    imp.add_argument("-o", "--output", type=Path, metavar="GRAPH",
                     help="graph file to write (default: CONFIG's name with .yaml, in the current folder)")
    imp.add_argument("--report", action="store_true", help="print every mapped key (OneTrainer key -> node.param)")
    imp.add_argument("--force", action="store_true", help="overwrite GRAPH if it exists")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="write a graph as another trainer's config",
                         description="Write a graph whose nodes all map to OneTrainer settings as a OneTrainer "
                                     "config (concepts and samples embedded); what does not map is listed.",
                         epilog="example:\n  nodetrainer export onetrainer my-graph.yaml -o my-config.json",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("tool", choices=["onetrainer"], help="the trainer to write a config for")
    exp.add_argument("graph", type=Path, help="graph file (YAML)")
    exp.add_argument("-o", "--output", type=Path, metavar="CONFIG", required=True, help="config file to write")
    exp.add_argument("--force", action="store_true", help="overwrite CONFIG if it exists")
    exp.set_defaults(func=cmd_export)


def cmd_import(args) -> int:
    from .fileio import atomic_write_text
    from .interop.onetrainer.importer import import_onetrainer
    from .interop.onetrainer.report import NOTE, UNSUPPORTED

    out = args.output or Path(args.config.stem + ".yaml")
    if out.exists() and not args.force:
        return _fail(f"{out} exists: give another -o or --force to overwrite it")
    try:
        imported = import_onetrainer(args.config, args.concepts, args.samples)
    except ValueError as e:
        return _fail(str(e))
    report = imported.report
    atomic_write_text(out, imported.text())
    if args.report:
        print(report.table())
    else:
        for row in report.of_kind(UNSUPPORTED) + report.of_kind(NOTE):
            print(f"{row.kind}: {row.key}: {row.target}")
    counts = {kind: len(report.of_kind(kind)) for kind in ("mapped", "not needed", UNSUPPORTED)}
    print(f"wrote {out}: {len(imported.graph.nodes)} nodes; {counts['mapped']} settings mapped, "
          f"{counts['not needed']} not needed, {counts[UNSUPPORTED]} unsupported"
          + ("" if args.report else " (--report lists them all)"))
    return EXIT_OK


def cmd_export(args) -> int:
    from .interop.onetrainer.export import export_file

    if args.output.exists() and not args.force:
        return _fail(f"{args.output} exists: give another -o or --force to overwrite it")
    try:
        warnings = export_file(args.graph, args.output)
    except ValueError as e:
        return _fail(str(e))
    for w in warnings or []:
        print(f"note: {w}")
    print(f"wrote {args.output}")
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID
