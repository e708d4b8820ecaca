"""The data preview's child process: ``python -m editor.preview_worker GRAPH NODE --count N --out DIR``.

Runs ``runtime.data.preview.preview`` (so nodes run here, never in the
editor), writes a thumbnail per sample into DIR and prints one JSON line per
sample: ``{"item": {index, kind, caption, text, detail, note, size, shape, size_text, path, error, fields,
thumbnail}}`` (``PreviewRecord.to_dict`` plus the thumbnail), or ``{"failure": message}``. No Qt is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

THUMB = 192


def thumbnail(image):
    """An RGB picture that fits THUMB x THUMB; a small one (a latent's channels) is enlarged, pixels kept sharp."""
    from PIL import Image

    img = image.convert("RGB")
    factor = THUMB // max(img.width, img.height)
    if factor >= 2:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    img.thumbnail((THUMB, THUMB))
    return img


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m editor.preview_worker")
    p.add_argument("graph", type=Path)
    p.add_argument("node")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a node prints must not mix with the JSON lines
    try:
        return _work(args, out)
    finally:
        sys.stdout = out


def _work(args, out) -> int:
    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from runtime.data.preview import preview
    from runtime.errors import GraphError
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry

    registry = default_registry()
    try:
        graph = load_graph(args.graph, registry)
        records = preview(graph, args.node, args.count, registry)
    except GraphError as e:
        emit({"failure": str(e)})
        return 2
    except Exception as e:  # a node failed: report it, the editor shows it
        emit({"failure": f"{type(e).__name__}: {e}"})
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for r in records:
        item = r.to_dict()
        if r.image is not None:
            path = args.out / f"{args.node}-{r.index}.png"
            thumbnail(r.image).save(path)
            item["thumbnail"] = str(path)
        emit({"item": item})
    return 0


if __name__ == "__main__":
    sys.exit(main())
