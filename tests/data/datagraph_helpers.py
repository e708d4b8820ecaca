"""Helpers for the data-graph tests: generated image folders, small graphs, running nodes, reading items."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE_GRAPH = HERE / "example-data.yaml"


def gradient(size, colour, seed=0):
    """An RGB image that is not left-right symmetric (so flips are visible), tinted by ``colour``."""
    import numpy as np
    from PIL import Image

    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array(colour, dtype=np.float64)[None, None, :]
    arr = base * (0.35 + 0.65 * x) * (0.6 + 0.4 * y) + (seed % 7) * 3
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@dataclass
class Dataset:
    root: Path
    good: list[Path] = field(default_factory=list)  # readable, captioned images
    corrupt: Path | None = None  # not an image at all: skipped at scan time
    truncated: Path | None = None  # header fine, pixels missing: skipped while loading
    uncaptioned: Path | None = None
    masked: Path | None = None

    def all_images(self) -> list[Path]:
        extra = [p for p in (self.corrupt, self.truncated, self.uncaptioned) if p]
        return sorted(self.good + extra)


def write_image(path: Path, size, colour, caption: str | None, **save):
    img = gradient(size, colour, seed=len(path.name))
    if save.pop("rgba", False):
        img = img.convert("RGBA")
        px = img.load()
        for x in range(size[0] // 2):
            for y in range(size[1]):
                px[x, y] = (0, 0, 0, 0)
    img.save(path, **save)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def make_dataset(root: Path, bad: bool = True, masks: bool = False) -> Dataset:
    """Mixed sizes and aspect ratios in png/jpg/webp, one EXIF-rotated jpg, one transparent png,
    a sub-folder; with ``bad``: a corrupt file, a truncated jpg and an image without caption."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    ds = Dataset(root)
    specs = [
        ("wide_red.png", (96, 48), (230, 40, 40), "red, wide, stripe, flat"),
        ("tall_blue.jpg", (40, 80), (40, 60, 230), "blue, tall, bar, flat"),
        ("square_green.webp", (64, 64), (40, 200, 60), "green, square, block, flat"),
        ("big_yellow.jpg", (160, 120), (230, 220, 40), "yellow, big, sun, flat"),
        ("small_cyan.png", (30, 30), (40, 220, 220), "cyan, small, dot, flat"),
        ("wide_purple.jpg", (120, 64), (150, 40, 200), "purple, wide, band, flat"),
    ]
    for name, size, colour, caption in specs:
        ds.good.append(write_image(root / name, size, colour, caption, **({"quality": 95} if name.endswith(".jpg") else {})))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed: stored 80x40 shows as 40x80
    ds.good.append(write_image(root / "rotated_orange.jpg", (80, 40), (240, 140, 30), "orange, rotated, flat",
                               exif=exif, quality=95))
    ds.good.append(write_image(root / "clear_pink.png", (48, 48), (240, 100, 180), "pink, transparent, flat",
                               rgba=True))
    (root / "sub").mkdir(exist_ok=True)
    ds.good.append(write_image(root / "sub" / "deep_white.png", (56, 72), (240, 240, 240), "white, deep, flat"))
    if masks:
        ds.masked = ds.good[0]
        Image.new("L", (96, 48), 0).save(root / "wide_red-masklabel.png")
    if bad:
        ds.corrupt = root / "corrupt.png"
        ds.corrupt.write_bytes(b"this is not a png at all" * 10)
        ds.corrupt.with_suffix(".txt").write_text("corrupt, never seen")
        import numpy as np

        full = root / "truncated.jpg"
        noise = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
        Image.fromarray(noise).save(full, quality=95)
        full.with_suffix(".txt").write_text("grey, truncated")
        data = full.read_bytes()
        full.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixels do not
        ds.truncated = full
        ds.uncaptioned = write_image(root / "uncaptioned.png", (64, 48), (10, 10, 10), None)
    return ds


class Ran:
    """Outcome of running some nodes of a graph in-process."""

    def __init__(self, result, events):
        self.result = result
        self.events = events

    def out(self, node: str, port: str):
        return self.result.outputs[node][port]

    def warnings(self) -> list[str]:
        return [e["message"] for e in self.events if e["event"] == "log" and e.get("level") == "warning"]

    def logs(self) -> list[str]:
        return [e["message"] for e in self.events if e["event"] == "log"]


def run_nodes(graph, registry, targets, overrides=(), workspace=None, tmp=None) -> Ran:
    """Validate ``graph`` and run what ``targets`` need, keeping their outputs. Failures raise."""
    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.validate import validate

    v = validate(graph, registry, list(overrides))
    assert v.ok, [str(p) for p in v.errors]
    sink = ListSink()
    ws = workspace or Path(tmp or os.getcwd())
    result = execute(v, workspace=ws, bus=EventBus([sink]), targets=tuple(targets), keep=tuple(targets))
    if result.error is not None:
        raise result.error
    return Ran(result, sink.events)


def graph_of(nodes: dict, name: str = "test", path: Path | None = None):
    """A Graph from {node_id: (type, params, {input: "node.port" | [links]})}."""
    from runtime.graph import Graph, Link, NodeEntry

    g = Graph(name=name, path=path)
    for node_id, (type_id, params, inputs) in nodes.items():
        entry = NodeEntry(node_id, type_id, None, dict(params))
        for port, links in inputs.items():
            entry.inputs[port] = [Link.parse(x) for x in links] if isinstance(links, list) else Link.parse(links)
        g.nodes[node_id] = entry
    return g


def pipeline(folder, **extra) -> dict:
    """Concept -> concepts -> load: the start most tests share; ``extra`` adds or replaces nodes."""
    nodes = {
        "concept": ("data.concept", {"folder": str(folder), "recursive": True}, {}),
        "source": ("data.concepts", {}, {"concepts": ["concept.concept"]}),
        "load": ("data.load_image", {}, {"path": "source.path"}),
    }
    nodes.update(extra)
    return nodes


def items_at(ran: Ran, node: str, epoch: int = 0, seed: int = 0, ports=None) -> list:
    """Every item of a node's sample outputs: a dict per item, or a SkipItem for a bad one."""
    from runtime.data import Eval, SkipItem
    from runtime.data.engine import Field, Preparer

    fields = {k: v for k, v in ran.result.outputs[node].items() if isinstance(v, Field) and (not ports or k in ports)}
    Preparer(seed, fill=False).prepare_fields(fields.values(), epoch)
    ev = Eval(epoch, seed)
    out = []
    for i in range(len(next(iter(fields.values())))):
        memo: dict = {}
        try:
            out.append({k: f.get(ev, i, memo) for k, f in fields.items()})
        except SkipItem as e:
            out.append(e)
    return out


def batches_of(source, epoch: int = 0, start: int = 0) -> list[dict]:
    return list(source.epoch(epoch, start))


def record_disk_writes() -> list[str]:
    """The keys this process's disk caches write from now on, in order (for a spawned rank: it patches
    ``DiskStore.put`` for the rest of the process)."""
    from runtime.data.cache import DiskStore

    written: list[str] = []
    real_put = DiskStore.put

    def put(self, key, value):
        written.append(key)
        real_put(self, key, value)

    DiskStore.put = put
    return written
