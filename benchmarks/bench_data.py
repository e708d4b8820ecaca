"""Data-graph throughput against a hand-written PIL loop doing the same work.

Mixed set: 500 generated images of mixed sizes and formats; 512 px aspect
buckets; load -> bucket -> scale & crop -> random flip -> to tensor -> batches
of 4. Measures images/s for the first epoch with 0 and 2 workers (the graph's
time includes the concept scan; the loop's includes its own header scan), and
for an epoch read from a disk cache. Targets: graph >= 0.95x the loop at 0
workers; cached epoch >= 10x the uncached one.

Photo set: 40 photo-like 2-6 MP JPEGs (some EXIF-rotated, as phones write
them) into 512 px buckets, the same pipeline with the bucket also connected
to Load image (reduced-scale JPEG decoding), uncached at 0 workers, against
the same plain loop and against that loop with Pillow's draft mode added.
Targets: graph >= 1.5x the plain loop; its crops >= 38 dB PSNR against a
full decode + Lanczos resize.

    python benchmarks/bench_data.py [--images 500] [--repeat 3] [--workers 2] [--section photos]
"""

from __future__ import annotations

import argparse
import math
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


# Photo-like JPEGs: camera sizes (sides divisible by 8, as sensors write them), 2-6 MP, stored size;
# portrait ones at odd indices are stored landscape with EXIF orientation 6, like a phone's.
PHOTO_SIZES = [(2048, 1536), (2400, 1600), (2592, 1944), (3000, 2000), (1920, 1080), (2560, 1440),
               (2000, 2000), (1536, 2048), (1600, 2400), (1080, 1920)]


def photo_like(w: int, h: int, rng):
    """A photo's statistics: 1/f luminance texture (natural images' spectrum), smoother chroma,
    a few flat objects with hard edges. ``rng``: a numpy Generator."""
    import numpy as np
    from PIL import Image, ImageDraw

    def field(fw, fh):
        fy = np.fft.fftfreq(fh).astype(np.float32)[:, None]
        fx = np.fft.rfftfreq(fw).astype(np.float32)[None, :]
        f = np.sqrt(fx * fx + fy * fy)
        f[0, 0] = 1.0
        spec = (rng.standard_normal(f.shape, np.float32) + 1j * rng.standard_normal(f.shape, np.float32)) / f
        x = np.fft.irfft2(spec, s=(fh, fw)).astype(np.float32)
        return (x - x.mean()) / (x.std() + 1e-6)

    lum = field(w, h) * 40 + rng.uniform(80, 170)
    u, v = (np.asarray(Image.fromarray(field(max(8, w // 4), max(8, h // 4))).resize((w, h), Image.Resampling.BICUBIC))
            * k for k in (12, 18))
    arr = np.stack([lum + 1.4 * v, lum - 0.34 * u - 0.71 * v, lum + 1.77 * u], -1)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(w // 20, w // 6))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0 - r, y0 - r, x0 + r, y0 + r), fill=fill)
    return img


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (quality 90) with captions; image i depends only on (seed, i)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        w, h = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        save = {"quality": 90}
        if w < h and i % 2 == 1:
            w, h = h, w
            exif = Image.Exif()
            exif[0x0112] = 6
            save["exif"] = exif
        path = folder / f"photo_{i:04d}.jpg"
        photo_like(w, h, rng).save(path, **save)
        path.with_suffix(".txt").write_text(f"photo {i}, generated")
        paths.append(path)
    return paths


def psnr(a, b) -> float:
    import numpy as np

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * math.log10(255.0 ** 2 / max(float((d * d).mean()), 1e-12))


# -- the hand-written baseline -------------------------------------------------------------

def baseline_epoch(files: list[str], resolution: int, quantization: int, batch_size: int, seed: int,
                   draft: float | None = None) -> int:
    """What a careful hand-written loader does: header scan, bucket, shuffle, then per item
    open / EXIF / RGB / scale-crop (one resize with a box) / flip / tensor, stacked per batch.
    ``draft``: also ask Pillow's draft mode for this many times the size covering the bucket
    (None, the baseline: full decode)."""
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
            if draft:
                cover = max(bw / sizes[i][0], bh / sizes[i][1])
                want = (math.ceil(sizes[i][0] * cover * draft), math.ceil(sizes[i][1] * cover * draft))
                img.draft(None, want if img.size == sizes[i] else want[::-1])  # a no-op for other formats
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
                cache_dir: Path | None = None, reduced: bool = False):
    """The pipeline of the module doc; ``reduced``: the bucket also goes to Load image (reduced-scale JPEGs)."""
    from runtime.graph import Graph

    g = Graph(name="bench-data")
    g.add_node("concept", "data.concept", params={"folder": str(folder)})
    g.add_node("source", "data.concepts")
    g.connect("concept", "concept", "source", "concepts")
    g.add_node("load", "data.load_image")
    g.connect("source", "path", "load", "path")
    g.add_node("bucket", "data.aspect_bucket", params={"resolution": resolution, "quantization": quantization})
    g.connect("source", "size", "bucket", "size")
    if reduced:
        g.connect("bucket", "bucket", "load", "bucket")
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
        g.connect("tensor", "image", "cache", "fields", multi=True)
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


def crops(graph, registry) -> list:
    """Every item's output of the graph's Scale & crop node (PIL, before flip and tensor)."""
    from runtime.data.engine import Eval, Preparer
    from runtime.executor import execute
    from runtime.validate import validate

    v = validate(graph, registry)
    with tempfile.TemporaryDirectory() as ws:
        result = execute(v, workspace=Path(ws), targets=("crop",), keep=("crop",))
    if result.error:
        raise result.error
    field = result.outputs["crop"]["image"]
    Preparer(0, fill=False).prepare_fields([field], 0)
    ev = Eval(0, 0)
    return [field.get(ev, i, {}) for i in range(len(field))]


def reference_crops(files: list[str], resolution: int, quantization: int, resample) -> tuple[list, int]:
    """Full decode + one resize with ``resample`` of each file to its bucket (centre crop), in scan
    order; and how many of the files decode at a reduced scale for their bucket."""
    from nodes.data.bucketing import DEFAULT_ASPECTS, bucket_list, crop_box, nearest_bucket, parse_aspect
    from runtime.data.pixels import open_image, to_rgb

    buckets = bucket_list(resolution, quantization, [parse_aspect(a) for a in DEFAULT_ASPECTS])
    out, reduced = [], 0
    for p in files:
        img = to_rgb(open_image(p), (255, 255, 255))
        bucket = nearest_bucket(img.size, buckets)
        box, _ = crop_box(img.size, bucket, "center", 0.0, None)
        out.append(img.resize(bucket, resample, box=box))
        reduced += open_image(p, bucket).size != img.size
    return out, reduced


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def warm(files: list[str]) -> None:
    """Read every file once, so the first timed run does not pay for the disk."""
    for p in files:
        Path(p).read_bytes()


def rates_table(n: int, rows) -> None:
    print(f"\n{'':40}{'best img/s':>12}{'median img/s':>14}")
    for name, ts in rows:
        print(f"{name:40}{n / min(ts):12.1f}{n / statistics.median(ts):14.1f}")


def mixed_section(args, registry, tmp: Path) -> None:
    """The mixed set (module doc): graph against the loop, workers, disk cache."""
    folder = args.dir or tmp / "images"
    t, _ = timed(lambda: (folder / "img_0000.txt").exists() or make_images(folder, args.images))
    files = sorted(str(p) for p in folder.iterdir() if p.suffix != ".txt")[: args.images]
    print(f"mixed set: {len(files)} images in {folder} (generated in {t:.1f}s); resolution {args.resolution}, "
          f"batch {args.batch_size}, {os.cpu_count()} cpu(s), torch threads {args.threads}", flush=True)
    warm(files)
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
    rates_table(N, [("hand-written PIL loop", loop_t), ("data graph, 0 workers", graph_t),
                    (f"data graph, {args.workers} workers", worker_t), ("data graph, cached epoch", cached_t)])
    print(f"{'cache fill (first epoch, 0 workers)':40}{N / fill_t:12.1f}")
    print(f"{'new run on a filled disk cache':40}{N / rerun_t:12.1f}")
    r0 = min(loop_t) / min(graph_t)
    rp = statistics.median(pairs)
    rw = min(graph_t) / min(worker_t)
    rc = min(graph_t) / min(cached_t)
    print(f"\ngraph / loop at 0 workers: {r0:.3f}x (best of each), {rp:.3f}x (median of back-to-back pairs: "
          f"{', '.join(f'{p:.3f}' for p in pairs)})   (target >= 0.95x)")
    print(f"{args.workers} workers / 0 workers: {rw:.2f}x")
    print(f"cached / uncached epoch: {rc:.1f}x   (target >= 10x)")


def photo_section(args, registry, tmp: Path) -> None:
    """The photo set (module doc): reduced-scale JPEG decoding against the plain loop, and its quality."""
    from PIL import Image

    from runtime.data.decode import DRAFT_GAP

    folder = args.photo_dir or tmp / "photos"
    t, _ = timed(lambda: (folder / "photo_0000.txt").exists() or make_photos(folder, args.photos))
    files = sorted(str(p) for p in folder.iterdir() if p.suffix == ".jpg")[: args.photos]
    mp = statistics.mean(Image.open(p).size[0] * Image.open(p).size[1] for p in files) / 1e6
    res, q, bs = args.photo_resolution, 64, args.batch_size
    print(f"\nphoto set: {len(files)} JPEGs of {mp:.1f} MP on average in {folder} (generated in {t:.1f}s); "
          f"resolution {res}, batch {bs}, 0 workers, uncached", flush=True)
    warm(files)
    g_full = build_graph(folder, res, q, bs, 0, 1)
    g_reduced = build_graph(folder, res, q, bs, 0, 1, reduced=True)

    def run_graph(g):
        n, _ = graph_epoch(g, registry)
        assert n == len(files), n

    runs = {
        "plain PIL loop (full decode)": lambda: baseline_epoch(files, res, q, bs, 1),
        f"plain PIL loop + draft ({DRAFT_GAP}x cover)": lambda: baseline_epoch(files, res, q, bs, 1, draft=DRAFT_GAP),
        "data graph, full decode": lambda: run_graph(g_full),
        "data graph, bucket -> load (reduced)": lambda: run_graph(g_reduced),
    }
    names = list(runs)
    plain, fast = names[0], names[3]
    # the plain loop and the graph it is compared with run back to back; the order reverses every round
    order = [plain, fast, names[1], names[2]]
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeat):
        for name in order if r % 2 == 0 else order[::-1]:
            c0 = time.process_time()
            t, _ = timed(runs[name])
            times[name].append(t)
            cpu[name].append(time.process_time() - c0)
        print(f"round {r + 1}: " + ", ".join(f"{name.split(' (')[0]} {times[name][-1]:.2f}s" for name in names),
              flush=True)
    rates_table(len(files), list(times.items()))
    for name in names[1:]:
        per_round = [p / t for p, t in zip(times[plain], times[name])]
        by_cpu = statistics.median(p / t for p, t in zip(cpu[plain], cpu[name]))
        target = "   (target >= 1.5x)" if name == fast else ""
        print(f"{name} / plain loop: {statistics.median(per_round):.2f}x (median of rounds: "
              f"{', '.join(f'{x:.2f}' for x in per_round)}; by CPU time {by_cpu:.2f}x){target}")

    ref, reduced = reference_crops(files, res, q, Image.Resampling.LANCZOS)
    ours = crops(g_reduced, registry)
    plain_crops, _ = reference_crops(files, res, q, Image.Resampling.BICUBIC)
    assert [a.size for a in ours] == [b.size for b in ref]
    for name, imgs in (("data graph, bucket -> load", ours), ("plain loop (full decode + bicubic)", plain_crops)):
        values = [psnr(a, b) for a, b in zip(imgs, ref)]
        target = "   (target >= 38 dB)" if imgs is ours else ""
        print(f"PSNR against full decode + Lanczos, {name}: min {min(values):.1f} dB, median "
              f"{statistics.median(values):.1f} dB{target}")
    print(f"decoded at a reduced scale: {reduced} of {len(files)} images")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=("all", "mixed", "photos"), default="all")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--photos", type=int, default=40, help="photo-like JPEGs in the photo set")
    ap.add_argument("--photo-resolution", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of timings (alternating order); best and median shown")
    ap.add_argument("--dir", type=Path, help="keep generated images here (reused when present)")
    ap.add_argument("--photo-dir", type=Path, help="keep generated photos here (reused when present)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads in this process (default 1: on a busy 2-core machine more "
                         "threads make elementwise ops erratic; DataLoader workers always use 1)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from runtime.registry import Registry

    registry = Registry.discover(entry_points=False)
    tmp = Path(tempfile.mkdtemp(prefix="nodetrainer-bench-"))
    try:
        import numpy  # noqa: F401  imports are not part of an epoch
        import torch
        import torch.utils.data  # noqa: F401
        from PIL import Image

        Image.init()
        torch.set_num_threads(args.threads)
        torch.zeros(1).to(torch.float32)
        if args.section in ("all", "mixed"):
            mixed_section(args, registry, tmp)
        if args.section in ("all", "photos"):
            photo_section(args, registry, tmp)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
