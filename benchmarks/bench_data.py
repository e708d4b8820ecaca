"""Data-graph throughput against a hand-written PIL loop doing the same work.

500 generated images of mixed sizes and formats; 512 px aspect buckets;
load -> bucket -> scale & crop -> random flip -> to tensor -> batches of 4.
Measures images/s for the first epoch with 0 and 2 workers (the graph's time
includes the concept scan; the loop's includes its own header scan), and for
an epoch read from a disk cache. Targets: graph >= 0.95x the loop at 0
workers; cached epoch >= 10x the uncached one.

    python benchmarks/bench_data.py [--images 500] [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = [(640, 480), (480, 640), (768, 512), (512, 768), (800, 800), (1024, 576), (576, 1024), (900, 600),
         (700, 700), (1200, 800), (600, 900), (1000, 1000)]
FORMATS = ["jpg"] * 6 + ["png"] * 3 + ["webp"]


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Smooth gradients with a few rectangles: realistic decode cost, quick to write."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        w, h = rng.choice(SIZES)
        fmt = rng.choice(FORMATS)
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        c0 = np.array([rng.randrange(256) for _ in range(3)], np.float32)
        c1 = np.array([rng.randrange(256) for _ in range(3)], np.float32)
        arr = (c0 * (1 - x) + c1 * x) * (0.5 + 0.5 * y)
        img = Image.fromarray(arr.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            draw.rectangle((x0, y0, x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2)),
                           fill=tuple(rng.randrange(256) for _ in range(3)))
        path = folder / f"img_{i:04d}.{fmt}"
        img.save(path, **({"quality": 90} if fmt in ("jpg", "webp") else {"compress_level": 1}))
        path.with_suffix(".txt").write_text(f"image {i}, generated")
        paths.append(path)
    return paths


# -- the hand-written baseline -------------------------------------------------------------

def baseline_epoch(files: list[str], resolution: int, quantization: int, batch_size: int, seed: int) -> int:
    """What a careful hand-written loader does: header scan, bucket, shuffle, then per item
    open / EXIF / RGB / scale-crop (one resize with a box) / flip / tensor, stacked per batch."""
    import math

    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from nodes.data.bucketing import DEFAULT_ASPECTS, bucket_list, nearest_bucket, parse_aspect

    sizes = []
    for p in files:
        with Image.open(p) as im:
            w, h = im.size
            raw = im.info.get("exif")
            if raw:
                ex = Image.Exif()
                ex.load(raw)
                if ex.get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
        sizes.append((w, h))
    buckets = bucket_list(resolution, quantization, [parse_aspect(a) for a in DEFAULT_ASPECTS])
    rng = random.Random(seed)
    order = list(range(len(files)))
    rng.shuffle(order)
    groups: dict = {}
    for i in order:
        groups.setdefault(nearest_bucket(sizes[i], buckets), []).append(i)
    batches = [(b, m[k:k + batch_size]) for b, m in groups.items() for k in range(0, len(m), batch_size)]
    rng.shuffle(batches)
    n = 0
    for (bw, bh), members in batches:
        tensors = []
        for i in members:
            img = Image.open(files[i])
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode != "RGB":
                img = img.convert("RGB")
            w, h = img.size
            scale = max(bw / w, bh / h)
            ox, oy = round((w * scale - bw) / 2), round((h * scale - bh) / 2)
            img = img.resize((bw, bh), Image.Resampling.BICUBIC,
                             box=(ox / scale, oy / scale, (ox + bw) / scale, (oy + bh) / scale))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            t = torch.from_numpy(np.array(img)).permute(2, 0, 1)
            t = t.to(torch.float32, memory_format=torch.contiguous_format).mul_(2.0 / 255.0).add_(-1.0)
            tensors.append(t)
        batch = torch.stack(tensors)
        n += batch.shape[0]
        assert math.isfinite(float(batch[0, 0, 0, 0]))
    return n


# -- the data graph ------------------------------------------------------------------------

def build_graph(folder: Path, resolution: int, quantization: int, batch_size: int, workers: int, seed: int,
                cache_dir: Path | None = None):
    from runtime.graph import Graph

    g = Graph(name="bench-data")
    g.add_node("concept", "data.concept", params={"folder": str(folder)})
    g.add_node("source", "data.concepts")
    g.connect("concept", "concept", "source", "concepts")
    g.add_node("load", "data.load_image")
    g.connect("source", "path", "load", "path")
    g.add_node("bucket", "data.aspect_bucket", params={"resolution": resolution, "quantization": quantization})
    g.connect("source", "size", "bucket", "size")
    g.add_node("crop", "data.scale_crop")
    g.connect("load", "image", "crop", "image")
    g.connect("bucket", "bucket", "crop", "bucket")
    g.add_node("flip", "data.random_flip")
    g.connect("crop", "image", "flip", "image")
    g.add_node("tensor", "data.to_tensor")
    g.connect("flip", "image", "tensor", "image")
    last = "tensor"
    if cache_dir is not None:
        g.add_node("cache", "data.disk_cache", params={"folder": str(cache_dir)})
        g.connect("tensor", "image", "cache", "image")
        last = "cache"
    g.add_node("batches", "data.batches", params={"batch_size": batch_size, "workers": workers, "seed": seed})
    g.connect(last, "image", "batches", "fields")
    g.connect("bucket", "bucket", "batches", "bucket")
    return g


def open_source(graph, registry):
    """Validate and run the graph up to the batches node (this includes the concept scan)."""
    from runtime.executor import execute
    from runtime.validate import validate

    v = validate(graph, registry)
    assert v.ok, [str(p) for p in v.errors]
    with tempfile.TemporaryDirectory() as ws:
        result = execute(v, workspace=Path(ws), targets=("batches",), keep=("batches",))
    if result.error:
        raise result.error
    return result.outputs["batches"]["batches"]


def graph_epoch(graph, registry, epoch: int = 0, source=None) -> tuple[int, object]:
    source = source or open_source(graph, registry)
    n = 0
    for batch in source.epoch(epoch):
        n += batch["image"].shape[0]
    return n, source


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (loop, graph) timings; best and median shown")
    ap.add_argument("--dir", type=Path, help="keep generated images here (reused when present)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads in this process (default 1: on a busy 2-core machine more "
                         "threads make elementwise ops erratic; DataLoader workers always use 1)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from runtime.registry import Registry

    registry = Registry.discover(entry_points=False)
    tmp = Path(tempfile.mkdtemp(prefix="nodetrainer-bench-"))
    try:
        folder = args.dir or tmp / "images"
        t, _ = timed(lambda: (folder / "img_0000.txt").exists() or make_images(folder, args.images))
        files = sorted(str(p) for p in folder.iterdir() if p.suffix != ".txt")[: args.images]
        print(f"{len(files)} images in {folder} (generated in {t:.1f}s); resolution {args.resolution}, "
              f"batch {args.batch_size}, {os.cpu_count()} cpu(s), torch threads {args.threads}", flush=True)
        for p in files:  # warm the page cache so the first timed run does not pay for the disk
            Path(p).read_bytes()
        import numpy  # noqa: F401  imports are not part of an epoch
        import torch
        import torch.utils.data  # noqa: F401
        from PIL import Image

        Image.init()
        torch.set_num_threads(args.threads)
        torch.zeros(1).to(torch.float32)
        q, bs = 64, args.batch_size
        g0 = build_graph(folder, args.resolution, q, bs, 0, 1)
        gw = build_graph(folder, args.resolution, q, bs, args.workers, 1)

        def run_loop():
            assert baseline_epoch(files, args.resolution, q, bs, 1) == len(files)

        def run_graph(g):
            n, _ = graph_epoch(g, registry)
            assert n == len(files), n

        loop_t, graph_t, worker_t, pairs = [], [], [], []
        for r in range(args.repeat):
            # alternate the order so a machine getting busier or quieter does not favour one side
            if r % 2 == 0:
                a, _ = timed(run_loop)
                b, _ = timed(lambda: run_graph(g0))
            else:
                b, _ = timed(lambda: run_graph(g0))
                a, _ = timed(run_loop)
            loop_t.append(a)
            graph_t.append(b)
            pairs.append(a / b)
            t, _ = timed(lambda: run_graph(gw))
            worker_t.append(t)
            print(f"round {r + 1}: loop {a:.2f}s, graph {b:.2f}s, graph with {args.workers} workers {t:.2f}s",
                  flush=True)

        cache_dir = tmp / "cache"
        gc = build_graph(folder, args.resolution, q, bs, 0, 1, cache_dir=cache_dir)
        fill_t, (_, src) = timed(lambda: graph_epoch(gc, registry, 0))
        cached_t = []
        for r in range(args.repeat):
            t, (n, _) = timed(lambda: graph_epoch(gc, registry, r + 1, source=src))
            assert n == len(files), n
            cached_t.append(t)
            print(f"cached epoch {r + 1}: {t:.2f}s (fill took {fill_t:.2f}s)", flush=True)
        t, (n, _) = timed(lambda: graph_epoch(gc, registry, 0))  # a new run: the cache is reused from disk
        rerun_t = t

        N = len(files)

        def rate(ts, fn=min):
            return N / fn(ts)

        print(f"\n{'':34}{'best img/s':>12}{'median img/s':>14}")
        rows = [("hand-written PIL loop", loop_t), ("data graph, 0 workers", graph_t),
                (f"data graph, {args.workers} workers", worker_t), ("data graph, cached epoch", cached_t)]
        for name, ts in rows:
            print(f"{name:34}{rate(ts):12.1f}{rate(ts, statistics.median):14.1f}")
        print(f"{'cache fill (first epoch, 0 workers)':34}{N / fill_t:12.1f}")
        print(f"{'new run on a filled disk cache':34}{N / rerun_t:12.1f}")
        r0 = rate(graph_t) / rate(loop_t)
        rp = statistics.median(pairs)
        rw = rate(worker_t) / rate(graph_t)
        rc = rate(cached_t) / rate(graph_t)
        print(f"\ngraph / loop at 0 workers: {r0:.3f}x (best of each), {rp:.3f}x (median of back-to-back pairs: "
              f"{', '.join(f'{p:.3f}' for p in pairs)})   (target >= 0.95x)")
        print(f"{args.workers} workers / 0 workers: {rw:.2f}x")
        print(f"cached / uncached epoch: {rc:.1f}x   (target >= 10x)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
