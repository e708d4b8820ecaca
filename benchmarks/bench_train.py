"""Training-step overhead of a graph run against a hand-written diffusers + peft loop.

Same process, same tiny model, same batches (the quickstart's data graph, read
from its RAM cache), same LoRA, optimizer, schedule and loss, in rounds that
alternate which runs first, after a warm-up round. Prints the median step time of
each, their ratio (target <= 1.05) and peak RSS; with --quickstart
also the peak RSS of a full ``python -m runtime run graphs/quickstart.yaml``
(target <= 1.5 GB).

Then against the way diffusers' examples/text_to_image/train_text_to_image_lora.py trains (its own
loop: images, VAE and text encoder every step), on the same images, 64 px, batch 4, rank-4 LoRA on
the attention projections: nodetrainer with its caches, target <= 0.8x the example's step time.

Then AdamW's step over an SD 1.5-sized rank-16 LoRA's 384 tensors: torch's default kernel against the
fused one train.optimizer uses.

The lifecycle part runs the quickstart again with every hook attached (sample
previews, periodic save, backups, TensorBoard, validation loss) but none due,
alternating with plain runs: the step-time overhead of the hooks (target <= 2%),
then the cost of a backup (the backup command) and of resuming from it.

With ``--family sdxl``: the tiny SDXL model's LoRA training instead (benchmarks/sdxl_bench_graph.yaml:
latents, both encoders' embeddings, pooled embeddings and size conditioning from a RAM cache) against the
same training written with diffusers + peft (``plain_sdxl``), on the same cached batches; it checks both
train the same number of weights, in the same adapted layers, on batches of the same shapes, and prints
both step times and their ratio (target <= 1.05). The SD-only parts (example, optimizer, lifecycle,
quickstart) do not run.

With ``--family flux``: the tiny Flux dev model's LoRA training (benchmarks/flux_bench_graph.yaml: latents,
T5 sequences and CLIP-L pooled embeddings from a RAM cache; the flow-matching objective with uniform sigmas
and no shift) against the same training written with diffusers + peft (``plain_flux``: packing and image
ids with FluxPipeline's helpers, guidance 1.0, velocity target), on the same cached batches, with the same
checks and figures as sdxl.

With ``--optimizers [NAMES]`` (sd): only the step time of each optimizer train.optimizer offers whose package
is installed, against AdamW: the tiny SD UNet's LoRA on the same batches, noise and timesteps, the optimizer
built by name through train.optimizer; ms per step and per optimizer.step(), and each ratio to an AdamW run
made beside it. Missing packages are listed.

With ``--compile [MODE]`` (any family): only train.loop's ``compile`` against eager on the family's graph: the
median step of each, their ratio, and the compile time (the compiled run's first step) on its own.

    python benchmarks/bench_train.py [--family sd|sdxl|flux] [--steps 60] [--threads 1] [--quickstart]
                                     [--no-lifecycle] [--no-example] [--optimizers [NAMES]] [--compile [MODE]]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodes.train.speed import COMPILE_MODES  # noqa: E402  (no torch import)


NEVER = 10**6  # a schedule that is checked every step and never due


def add_idle_hooks(graph, reg) -> None:
    """Attach every kind of training hook to the quickstart's loop, each on a schedule that is never due."""
    from runtime.graph import Link

    def add(node_id, type_id, params, **inputs):
        entry = graph.add_node(node_id, type_id, reg.get(type_id).version, params)
        entry.inputs.update(inputs)

    add("bench_previews", "sd.sample", {"steps": 2, "width": 64, "height": 64})
    add("sample_hook", "train.sample_hook", {"every": NEVER}, samplers=[Link("bench_previews", "sampler")])
    add("saver", "sd.save_lora", {"name": "periodic"})
    add("save_hook", "train.save_hook", {"every": NEVER}, savers=[Link("saver", "saver")])
    add("backups", "train.backup_hook", {"every": NEVER})
    add("tensorboard", "train.tensorboard", {"every": NEVER, "images": False})
    add("validation", "train.validation_hook", {"every": NEVER}, batches=Link("batches", "batches"))
    graph.nodes["train"].inputs["hooks"] = [Link(n, "hook") for n in
                                            ("sample_hook", "save_hook", "backups", "tensorboard", "validation")]


def graph_run(steps: int, workspace: Path, hooks: bool = False, commands: tuple = (), resume: Path | None = None,
              sets: tuple = ()):
    """Run the quickstart graph up to train.loop; return (step times, batches per epoch as lists, events)."""
    from runtime.control import CancelToken, CommandInbox
    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    reg = default_registry()
    graph = load_graph(ROOT / "graphs" / "quickstart.yaml", reg)
    if hooks:
        add_idle_hooks(graph, reg)
    else:  # without the quickstart's commands-only previews hook: the loop alone
        graph.nodes["train"].inputs.pop("hooks", None)
    v = validate(graph, reg, [f"steps={steps}", *sets])
    assert v.ok, v.problems
    sink, cancel = ListSink(), CancelToken()
    inbox = CommandInbox(cancel)
    for command in commands:
        inbox.put({"command": command})
    r = execute(v, workspace=workspace, bus=EventBus([sink]), targets=("train",), keep=("batches",),
                cancel=cancel, inbox=inbox, resume=resume)
    assert r.ok, r.error
    times = [e["step_time"] for e in sink.of("progress") if e["node"] == "train"]
    source = r.outputs["batches"]["batches"]
    epochs = (steps + len(source) - 1) // len(source)
    data = [[dict(b) for b in source.epoch(e)] for e in range(epochs)]
    return times, data, sink.events


def lifecycle(steps: int, rounds: int) -> None:
    """Hooks attached but not due against none (alternating runs), then backup and resume cost."""
    plain, hooked, backups = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            plain += graph_run(steps, Path(tmp) / f"plain{r}")[0]
            times, _, events = graph_run(steps, Path(tmp) / f"hooks{r}", hooks=True, commands=("backup",))
            hooked += times[1:]  # step 1 wrote the commanded backup
            backups += [e for e in events if e["event"] == "saved" and e["format"] == "backup"]
        folder = Path(backups[-1]["path"])
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        _, _, events = graph_run(backups[-1]["step"] + 2, Path(tmp) / "resumed", hooks=True, resume=folder)
        (resumed,) = [e for e in events if e["event"] == "log" and "resumed_step" in e]
    p, h = statistics.median(plain), statistics.median(hooked)
    print(f"no hooks   median step {p * 1000:8.2f} ms   ({len(plain)} steps in {rounds} runs)")
    print(f"idle hooks median step {h * 1000:8.2f} ms   ({len(hooked)} steps, 5 hooks attached, none due)")
    print(f"hook overhead          {(h / p - 1) * 100:+8.2f} %   (target <= 2%)")
    print(f"backup                 {statistics.median(e['seconds'] for e in backups) * 1000:8.1f} ms   "
          f"({size:.1f} MiB: LoRA weights, optimizer, scheduler, RNGs, graph); {p * 1000:.0f} ms per step")
    print(f"resume                 {resumed['seconds'] * 1000:8.1f} ms   (load the backup into the set-up model)")


def plain_run(steps: int, data: list[list[dict]], seed: int = 42):
    """The same training, written directly against diffusers, peft and torch."""
    import json

    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig

    tiny = ROOT / "assets" / "tiny_model"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(json.loads((tiny / "unet" / "config.json").read_text()))
    sched = DDPMScheduler.from_config(json.loads((tiny / "scheduler" / "scheduler_config.json").read_text()))
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    lr_sched = get_scheduler("cosine", opt, num_warmup_steps=round(0.1 * steps), num_training_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    times, step = [], 0
    t = time.perf_counter()
    while step < steps:
        for batch in data[step // len(data[0])]:
            x0 = batch["latent"].float()
            noise = torch.randn(x0.shape, generator=gen)
            ts = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
            pred = unet(sched.add_noise(x0, noise, ts), ts, encoder_hidden_states=batch["embedding"]).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            step += 1
            now = time.perf_counter()
            times.append(now - t)
            t = now
            if step >= steps:
                break
    return times


def example_images(folder: Path, count: int = 16, size: int = 256) -> Path:
    """``count`` square JPEGs with .txt captions, the same every time (seeded): a dataset whose items all
    fall in one bucket, so both trainers see full batches of the same images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = (rng.random((size // 16, size // 16, 3)) * 255).astype("uint8")
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:02d}.jpg", quality=90)
        (folder / f"{i:02d}.txt").write_text(f"a photo of pattern {i}, soft colours", encoding="utf-8")
    return folder


def example_run(steps: int, folder: Path, batch_size: int = 4, resolution: int = 64, rank: int = 4):
    """The way diffusers' examples/text_to_image/train_text_to_image_lora.py trains, as its own loop:
    every step loads and transforms the images (resize, center crop, normalise) and tokenizes the captions
    in a DataLoader (0 workers), encodes the images with the VAE and the captions with the text encoder,
    then the UNet step (rank-``rank`` gaussian LoRA on to_q/k/v/out, AdamW, clipping, constant LR)."""
    import json

    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tiny = ROOT / "assets" / "tiny_model"

    def config(part: str) -> dict:
        name = "scheduler_config.json" if part == "scheduler" else "config.json"
        return json.loads((tiny / part / name).read_text())

    te_config = {k: v for k, v in config("text_encoder").items() if k not in ("architectures", "model_type")}
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny / "tokenizer"))
    files = sorted(folder.glob("*.jpg"))

    class Examples(torch.utils.data.Dataset):  # the example's preprocess_train, item by item
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            image = Image.open(files[i]).convert("RGB")
            w, h = image.size
            scale = resolution / min(w, h)
            image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
            left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            ids = tokenizer(files[i].with_suffix(".txt").read_text(), max_length=tokenizer.model_max_length,
                            padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
            return {"pixel_values": (pixels - 0.5) / 0.5, "input_ids": ids}

    def collate(examples):
        pixels = torch.stack([e["pixel_values"] for e in examples]).to(memory_format=torch.contiguous_format)
        return {"pixel_values": pixels.float(), "input_ids": torch.stack([e["input_ids"] for e in examples])}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the example's set_seed
        unet = UNet2DConditionModel.from_config(config("unet"))
        vae = AutoencoderKL.from_config(config("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_config))
        noise_scheduler = DDPMScheduler.from_config(config("scheduler"))
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        lora_layers = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(lora_layers, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        loader = torch.utils.data.DataLoader(Examples(), shuffle=True, collate_fn=collate, batch_size=batch_size,
                                             num_workers=0, drop_last=True)
        lr_scheduler = get_scheduler("constant", optimizer, num_warmup_steps=0, num_training_steps=steps)
        gen = torch.Generator().manual_seed(0)  # the example draws from the global one; same work, seeded
        times, step = [], 0
        t = time.perf_counter()
        while step < steps:
            unet.train()
            for batch in loader:
                latents = vae.encode(batch["pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn(latents.shape, generator=gen)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          generator=gen)
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = torch.nn.functional.mse_loss(model_pred.float(), noise.float(), reduction="mean")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(lora_layers, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                loss.item()  # the example logs the loss every step
                step += 1
                now = time.perf_counter()
                times.append(now - t)
                t = now
                if step >= steps:
                    break
    return times


def against_example(steps: int, rounds: int, batch_size: int = 4) -> None:
    """nodetrainer (the quickstart graph: latents and text embeddings from its RAM cache) against the diffusers
    example's way (data, VAE and text encoder every step), on the same 16 square images, 64 px, batch 4, in
    rounds that alternate which runs first, after a warm-up round of each."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = example_images(Path(tmp) / "images")
        sets = (f"dataset={folder}", f"batches.batch_size={batch_size}")
        graph_run(8, Path(tmp) / "warmup", sets=sets)
        example_run(8, folder, batch_size)
        graph, example, pairs = [], [], []
        for r in range(rounds):
            got = {}
            for which in (("graph", "example") if r % 2 == 0 else ("example", "graph")):
                got[which] = (graph_run(steps, Path(tmp) / f"graph{r}", sets=sets)[0] if which == "graph"
                              else example_run(steps, folder, batch_size))
            graph += got["graph"]
            example += got["example"]
            pairs.append(statistics.median(got["graph"]) / statistics.median(got["example"]))
    g, e = statistics.median(graph), statistics.median(example)
    print(f"diffusers example way  median step {e * 1000:8.2f} ms   (mean {statistics.mean(example) * 1000:.2f} ms; "
          f"images, VAE and text encoder every step; batch {batch_size}, 64 px)")
    print(f"graph with caches      median step {g * 1000:8.2f} ms   (mean {statistics.mean(graph) * 1000:.2f} ms; "
          "the first epoch fills the cache)")
    print(f"ratio graph / example  {g / e:8.3f}   (target <= 0.8; per round: " + ", ".join(f"{p:.3f}" for p in pairs) + ")")


def sd15_lora_shapes(rank: int = 16) -> list[tuple[int, int]]:
    """The LoRA A/B shapes of SD 1.5's UNet with the attn-mlp preset: 16 transformer blocks (widths 320,
    640, 1280; cross-attention from 768), each with q/k/v/out of both attentions, the feed-forward and
    proj_in/proj_out: 384 tensors."""
    shapes = []
    for width in [320] * 5 + [640] * 5 + [1280] * 6:
        layers = [(width, width)] * 4 + [(width, width), (768, width), (768, width), (width, width)]
        layers += [(width, 8 * width), (4 * width, width), (width, width), (width, width)]
        for fan_in, fan_out in layers:
            shapes += [(rank, fan_in), (fan_out, rank)]
    return shapes


def optimizer_step_figures(rounds: int, steps: int = 20) -> None:
    """AdamW's step over an SD 1.5-sized LoRA's weights: torch's default kernel on this device against the
    fused one train.optimizer picks (the same update, one kernel for all tensors)."""
    import torch

    from nodes.train.optimizer import OptimizerConfig

    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.01) for s in sd15_lora_shapes()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    ours = OptimizerConfig("adamw", 1e-4, weight_decay=0.01).build(params)
    default = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    times = {"default": [], "fused": []}
    for r in range(rounds + 1):
        for name, opt in (("default", default), ("fused", ours)) if r % 2 == 0 else (("fused", ours),
                                                                                      ("default", default)):
            t = time.perf_counter()
            for _ in range(steps):
                opt.step()
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - t) / steps)
    d, f = statistics.median(times["default"]), statistics.median(times["fused"])
    print(f"AdamW step, SD 1.5 LoRA ({len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f} M weights): "
          f"torch default {d * 1000:.1f} ms, fused (train.optimizer) {f * 1000:.1f} ms, {d / f:.1f}x")


def compare(steps: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Step times of the graph run and of the plain loop, pooled over ``rounds`` rounds that alternate
    which goes first (drift and cache warmth hit both alike), after one warm-up round that is not
    counted (the first run of a process pays for allocator and kernel warm-up). Also each round's ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        _, data, _ = graph_run(steps, Path(tmp) / "warmup")
        plain_run(steps, data)
        graph_times, plain_times, pairs = [], [], []
        for r in range(rounds):
            order = ("graph", "plain") if r % 2 == 0 else ("plain", "graph")
            got = {}
            for which in order:
                got[which] = (graph_run(steps, Path(tmp) / f"graph{r}")[0] if which == "graph"
                              else plain_run(steps, data))
            graph_times += got["graph"]
            plain_times += got["plain"]
            pairs.append(statistics.median(got["graph"]) / statistics.median(got["plain"]))
    return graph_times, plain_times, pairs


def quickstart_rss() -> tuple[float, float, int]:
    """Wall time, peak RSS (MB) and exit code of the quickstart as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "runtime", "run", "graphs/quickstart.yaml", "--workspace", tmp],
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, proc.returncode


# -- SDXL ----------------------------------------------------------------------------------------------

SDXL_GRAPH = ROOT / "benchmarks" / "sdxl_bench_graph.yaml"
SDXL_FIELDS = ("latent", "embedding", "pooled_embedding", "time_ids")  # what the UNet step reads


@dataclass
class Run:
    """One training run of either side: step times (wall and this process's CPU time), losses, trainable
    weights and each step's batch shapes."""

    times: list[float]
    losses: list[float]
    trainable: int
    shapes: list[dict[str, tuple[int, ...]]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    #: the layers that got adapters, as part.module names
    adapted: list[str] = field(default_factory=list)


class CpuClock:
    """An event sink that notes the process's CPU time at each event of train.loop (sinks run in the
    emitting thread): the CPU time of each step is the time between progress events, which other
    processes on a shared machine disturb much less than the wall time."""

    def __init__(self):
        self.marks: list[tuple[str, float]] = []

    def __call__(self, event: dict) -> None:
        if event.get("node") == "train":
            self.marks.append((event["event"], time.process_time()))

    def step_times(self) -> list[float]:
        """From the last event before the first step (the loop's start log) to each step's progress."""
        first = next(i for i, (kind, _) in enumerate(self.marks) if kind == "progress")
        ticks = [self.marks[first - 1][1]] + [t for kind, t in self.marks[first:] if kind == "progress"]
        return [b - a for a, b in zip(ticks, ticks[1:])]


def batch_shapes(batch: dict, fields: tuple[str, ...] = SDXL_FIELDS) -> dict[str, tuple[int, ...]]:
    """The shapes of the ``fields`` (what the denoiser's step reads) in one batch."""
    return {k: tuple(batch[k].shape) for k in fields}


def shape_counts(shapes: list[dict]) -> str:
    """The distinct batch shapes of a run, each with how many steps had it."""
    counts = collections.Counter(tuple(s.items()) for s in shapes)
    return "; ".join(f"{n} x (" + ", ".join(f"{k} {list(v)}" for k, v in key) + ")" for key, n in counts.items())


def adapted_layers(parts: dict) -> list[str]:
    """``part.module`` names of the layers peft wrapped with a LoRA adapter, sorted."""
    return sorted(f"{part}.{name}" for part, module in parts.items() for name, m in module.named_modules()
                  if hasattr(m, "lora_A"))


def graph_bench(path: Path, fields: tuple[str, ...], steps: int, workspace: Path,
                seed: int = 42, sets: tuple = ()) -> tuple[Run, list[list[dict]]]:
    """Run the benchmark graph ``path`` (its inputs ``steps`` and ``seed``, and the overrides ``sets``) up to
    train.loop; return the run (``fields``: the batch fields whose shapes it notes) and its batches per epoch
    as lists (what the plain loop trains on)."""
    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    reg = default_registry()
    v = validate(load_graph(path, reg), reg, [f"steps={steps}", f"seed={seed}", *sets])
    assert v.ok, v.problems
    sink, clock = ListSink(), CpuClock()
    r = execute(v, workspace=workspace, bus=EventBus([sink, clock]), targets=("train",), keep=("batches", "train"))
    assert r.ok, r.error
    progress = [e for e in sink.of("progress") if e["node"] == "train"]
    source = r.outputs["batches"]["batches"]
    epochs = (steps + len(source) - 1) // len(source)
    data = [[dict(b) for b in source.epoch(e)] for e in range(epochs)]
    trained = r.outputs["train"]["trained"]
    seen = [batch_shapes(b, fields) for epoch in data for b in epoch][:steps]  # the batches the loop trained on
    run = Run([e["step_time"] for e in progress], [e["loss"] for e in progress],
              sum(p.numel() for p in trained.trainable_parameters()), seen, clock.step_times(),
              adapted_layers(trained.trained_parts()))
    return run, data


def graph_sdxl(steps: int, workspace: Path, seed: int = 42) -> tuple[Run, list[list[dict]]]:
    """Run benchmarks/sdxl_bench_graph.yaml (tiny SDXL, RAM cache, sdxl.lora_setup, train.loop) for
    ``steps`` steps; return the run and its batches per epoch as lists (what the plain loop trains on)."""
    return graph_bench(SDXL_GRAPH, SDXL_FIELDS, steps, workspace, seed)


def lora_unet(tiny: str, seed: int):
    """The UNet of ``assets/<tiny>`` (weights drawn from seed 0, as the family's tiny_model node draws
    them: the UNet is its first draw) with rank-4 LoRA on its attention, initialised from ``seed``;
    with its DDPM schedule and trainable weights: (unet, scheduler, params)."""
    import json

    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    folder = ROOT / "assets" / tiny
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(json.loads((folder / "unet" / "config.json").read_text()))
        unet.requires_grad_(False)
        torch.manual_seed(seed)  # peft initialises the adapters from torch's generator
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    sched = DDPMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    unet.train()
    return unet, sched, [p for p in unet.parameters() if p.requires_grad]


def plain_sdxl(steps: int, data: list[list[dict]], seed: int = 42) -> Run:
    """The same SDXL LoRA training written directly against diffusers, peft and torch: the tiny SDXL UNet
    (same config, same weights), rank-4 LoRA on the attention projections, AdamW (lr 1e-3, weight decay
    0.01; torch's fused kernel, as train.optimizer picks on this device), cosine schedule with 10 % warmup,
    DDPM noise, epsilon target, MSE, clipping at 1.0; the UNet conditioned on the cached hidden states,
    pooled embeddings and size numbers (``added_cond_kwargs``)."""
    import torch
    from diffusers.optimization import get_scheduler

    unet, sched, params = lora_unet("tiny_sdxl", seed)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)  # the same update kernel
    lr_sched = get_scheduler("cosine", opt, num_warmup_steps=round(0.1 * steps), num_training_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    run = Run([], [], sum(p.numel() for p in params), adapted=adapted_layers({"unet": unet}))
    t, c = time.perf_counter(), time.process_time()
    while len(run.times) < steps:
        for batch in data[len(run.times) // len(data[0])]:
            x0 = batch["latent"].float()
            noise = torch.randn(x0.shape, generator=gen)
            ts = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
            pred = unet(sched.add_noise(x0, noise, ts), ts, encoder_hidden_states=batch["embedding"],
                        added_cond_kwargs={"text_embeds": batch["pooled_embedding"], "time_ids": batch["time_ids"]},
                        return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            run.losses.append(loss.item())
            run.shapes.append(batch_shapes(batch))
            now, cpu = time.perf_counter(), time.process_time()
            run.times.append(now - t)
            run.cpu.append(cpu - c)
            t, c = now, cpu
            if len(run.times) >= steps:
                break
    return run


def compare_pair(graph_fn, plain_fn, steps: int, rounds: int) -> tuple[Run, Run, Run, Run, list[float]]:
    """``compare`` for a family's pair (``graph_fn(steps, workspace)`` -> (Run, batches), ``plain_fn(steps,
    batches)`` -> Run): the warm-up runs (graph, plain; not timed), then the runs of both pooled over
    ``rounds`` rounds that alternate which goes first (one Run each), and each round's ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        graph_warm, data = graph_fn(steps, Path(tmp) / "warmup")
        plain_warm = plain_fn(steps, data)
        pooled = {"graph": Run([], [], 0), "plain": Run([], [], 0)}
        pairs = []
        for r in range(rounds):
            got = {}
            for which in ("graph", "plain") if r % 2 == 0 else ("plain", "graph"):
                got[which] = (graph_fn(steps, Path(tmp) / f"graph{r}")[0] if which == "graph"
                              else plain_fn(steps, data))
                pooled[which].times += got[which].times
                pooled[which].cpu += got[which].cpu
            pairs.append(statistics.median(got["graph"].times) / statistics.median(got["plain"].times))
    return graph_warm, plain_warm, pooled["graph"], pooled["plain"], pairs


#: what each family's pair shares, for the printout
PAIRS = {
    "sdxl": ("tiny SDXL UNet, rank-4 LoRA on to_q/k/v/out; both: fused AdamW, cosine schedule, epsilon MSE, "
             "clipping 1.0"),
    "flux": ("tiny Flux dev transformer, rank-4 LoRA on the attention projections; both: fused AdamW, cosine "
             "schedule, uniform sigmas, no shift, velocity MSE, guidance 1.0, clipping 1.0"),
}


def pair_figures(family: str, steps: int, rounds: int) -> None:
    """Print what both sides train (weights, layers, batch shapes), their median step times and the ratio."""
    import torch

    graph_fn, plain_fn = {"sdxl": (graph_sdxl, plain_sdxl), "flux": (graph_flux, plain_flux)}[family]
    graph, plain, graph_runs, plain_runs, pairs = compare_pair(graph_fn, plain_fn, steps, rounds)
    graph_times, plain_times = graph_runs.times, plain_runs.times
    assert graph.trainable == plain.trainable, (graph.trainable, plain.trainable)
    assert graph.adapted == plain.adapted, (graph.adapted, plain.adapted)
    assert graph.shapes == plain.shapes, (graph.shapes, plain.shapes)
    g, p = statistics.median(graph_times), statistics.median(plain_times)
    print(f"family                 {family} ({PAIRS[family]})")
    print(f"trainable weights      graph {graph.trainable:,}, plain {plain.trainable:,} "
          f"(the same {len(graph.adapted)} adapted layers)")
    print(f"batch shapes (both)    {shape_counts(graph.shapes)}")
    print(f"steps per run          {steps} (torch threads: {torch.get_num_threads()}); "
          f"{rounds} rounds after a warm-up round")
    print(f"graph   median step    {g * 1000:8.2f} ms   (mean {statistics.mean(graph_times) * 1000:.2f} ms)")
    print(f"plain   median step    {p * 1000:8.2f} ms   (mean {statistics.mean(plain_times) * 1000:.2f} ms)")
    print(f"ratio graph / plain    {g / p:8.3f}   (target <= 1.05; per round: "
          + ", ".join(f"{r:.3f}" for r in pairs) + ")")
    gc, pc = statistics.median(graph_runs.cpu), statistics.median(plain_runs.cpu)
    print(f"CPU time median step   graph {gc * 1000:.2f} ms, plain {pc * 1000:.2f} ms, ratio {gc / pc:.3f}   "
          "(this process's CPU time: less disturbed by other processes than the wall time)")
    print(f"peak RSS (this process) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MB")


# -- Flux ----------------------------------------------------------------------------------------------

FLUX_GRAPH = ROOT / "benchmarks" / "flux_bench_graph.yaml"
FLUX_FIELDS = ("latent", "t5_embedding", "pooled_embedding")  # what the transformer step reads
#: flux.lora_setup's ``attn`` preset as peft's full-name regex: both streams' attention projections in the
#: double blocks, q/k/v in the single blocks (their output is the block's proj_out, an MLP-preset layer)
FLUX_ATTENTION = (r"(transformer_blocks|single_transformer_blocks)\.\d+\.attn\."
                  r"(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)")


def graph_flux(steps: int, workspace: Path, seed: int = 42) -> tuple[Run, list[list[dict]]]:
    """Run benchmarks/flux_bench_graph.yaml (tiny Flux dev, RAM cache, flux.lora_setup, flow-matching
    objective, train.loop) for ``steps`` steps; return the run and its batches per epoch as lists."""
    return graph_bench(FLUX_GRAPH, FLUX_FIELDS, steps, workspace, seed)


def plain_flux(steps: int, data: list[list[dict]], seed: int = 42) -> Run:
    """The same Flux LoRA training written directly against diffusers, peft and torch: the tiny Flux dev
    transformer (same config, same weights), rank-4 LoRA on the attention projections, fused AdamW (lr 1e-3,
    weight decay 0.01), cosine schedule with 10 % warmup, clipping at 1.0; per step noise and uniform sigmas
    from a seeded generator, ``x_t = (1 - s) x0 + s noise``, latents packed with ``FluxPipeline._pack_latents``,
    image ids from ``_prepare_latent_image_ids``, zero text ids, guidance 1.0, the prediction unpacked with
    ``_unpack_latents``, MSE against ``noise - x0``."""
    import json

    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig

    tiny = ROOT / "assets" / "tiny_flux"
    config = json.loads((tiny / "transformer" / "config.json").read_text())
    config["guidance_embeds"] = True  # dev
    vae_scale = 2 ** (len(json.loads((tiny / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # flux.tiny_model's seed: the transformer is its first draw, so the same weights
        transformer = FluxTransformer2DModel.from_config(config)
        transformer.requires_grad_(False)
        torch.manual_seed(seed)  # peft initialises the adapters from torch's generator
        transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=FLUX_ATTENTION))
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
    lr_sched = get_scheduler("cosine", opt, num_warmup_steps=round(0.1 * steps), num_training_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    run = Run([], [], sum(p.numel() for p in params), adapted=adapted_layers({"transformer": transformer}))
    t, c = time.perf_counter(), time.process_time()
    while len(run.times) < steps:
        for batch in data[len(run.times) // len(data[0])]:
            x0 = batch["latent"].float()
            b, ch, h, w = x0.shape
            noise = torch.randn(x0.shape, generator=gen)
            sigmas = torch.rand(b, generator=gen)
            s = sigmas.view(b, 1, 1, 1)
            t5 = batch["t5_embedding"]
            pred = transformer(hidden_states=FluxPipeline._pack_latents((1 - s) * x0 + s * noise, b, ch, h, w),
                               encoder_hidden_states=t5, pooled_projections=batch["pooled_embedding"],
                               timestep=sigmas, guidance=torch.full((b,), 1.0),
                               img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x0.device, x0.dtype),
                               txt_ids=torch.zeros(t5.shape[1], 3), return_dict=False)[0]
            pred = FluxPipeline._unpack_latents(pred, h * vae_scale, w * vae_scale, vae_scale)
            loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            run.losses.append(loss.item())
            run.shapes.append(batch_shapes(batch, FLUX_FIELDS))
            now, cpu = time.perf_counter(), time.process_time()
            run.times.append(now - t)
            run.cpu.append(cpu - c)
            t, c = now, cpu
            if len(run.times) >= steps:
                break
    return run


# -- optimizers and torch.compile (--optimizers, --compile) ----------------------------------------------

def optimizer_names() -> tuple[str, ...]:
    """Every optimizer train.optimizer offers (its ``name`` choice)."""
    from nodes.train.optimizer import Optimizer

    return Optimizer.__node_spec__.params["name"].kind.options


def optimizer_run(name: str, steps: int, data: list[list[dict]], seed: int = 42) -> tuple[list[float], list[float]]:
    """``plain_run``'s training (tiny SD UNet, rank-4 LoRA, same batches, noise and timesteps) with the
    optimizer ``name`` built through train.optimizer (lr 1e-4; 1.0 for the learning-rate free ones) at a
    constant LR: (step times, times of the optimizer.step() call alone), both in this process's CPU time
    (one torch thread: the work done, much less disturbed by other processes than the wall time)."""
    import torch

    from nodes.train.optimizer import OptimizerConfig
    from nodes.train.optimizers import OPTIMIZERS

    unet, sched, params = lora_unet("tiny_model", seed)
    config = OptimizerConfig(name, 1.0 if OPTIMIZERS[name].adaptive else 1e-4, weight_decay=0.01)
    with contextlib.redirect_stdout(io.StringIO()):  # prodigy's and others' notes would split the table
        opt = config.build(params)
    if config.schedule_free:
        opt.train()  # schedule-free optimizers step in train mode only
    gen = torch.Generator().manual_seed(seed)
    times, step_times = [], []
    clock = time.process_time
    t = clock()
    while len(times) < steps:
        for batch in data[len(times) // len(data[0])]:
            x0 = batch["latent"].float()
            noise = torch.randn(x0.shape, generator=gen)
            ts = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
            pred = unet(sched.add_noise(x0, noise, ts), ts, encoder_hidden_states=batch["embedding"]).sample
            torch.nn.functional.mse_loss(pred.float(), noise).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            s = clock()
            opt.step()
            step_times.append(clock() - s)
            opt.zero_grad(set_to_none=True)
            now = clock()
            times.append(now - t)
            t = now
            if len(times) >= steps:
                break
    return times, step_times


def optimizer_figures(steps: int, names: tuple[str, ...] | None = None) -> None:
    """ms per training step and per optimizer.step() of each installed optimizer (``names``: these only)
    on the tiny SD model's LoRA, each run next to an AdamW run (the ratio is to that AdamW: drift and load
    hit both alike); optimizers whose package is missing are listed, not run."""
    from nodes.train.optimizers import OPTIMIZERS, missing_package

    names = names or optimizer_names()
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise SystemExit(f"bench_train: unknown optimizer(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(optimizer_names())}")
    with tempfile.TemporaryDirectory() as tmp:
        _, data, _ = graph_run(steps, Path(tmp) / "data")
    optimizer_run("adamw", steps, data)  # warm-up, not counted
    missing: dict[str, list[str]] = {}
    print(f"optimizer step overhead on the tiny SD LoRA ({steps} steps, the same batches, noise and timesteps "
          "each; median CPU ms of this process; ratio to the AdamW run beside it)")
    print(f"{'optimizer':28s} {'ms/step':>8s} {'ratio':>7s}   {'ms/opt.step':>11s} {'ratio':>7s}")
    for name in names:
        why = missing_package(name)
        if why:
            missing.setdefault(OPTIMIZERS[name].pip or OPTIMIZERS[name].package, []).append(name)
            continue
        try:
            times, opt_times = optimizer_run(name, steps, data)
        except Exception as e:  # noqa: BLE001 - one optimizer's failure is a line of the table, not the end
            print(f"{name:28s} failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e) else ''}")
            continue
        base, base_opt = optimizer_run("adamw", steps, data)
        m, mo = statistics.median(times), statistics.median(opt_times)
        b, bo = statistics.median(base), statistics.median(base_opt)
        print(f"{name:28s} {m * 1000:8.2f} {m / b:7.3f}   {mo * 1000:11.3f} {mo / bo:7.3f}")
    for package, skipped in missing.items():
        print(f"skipped (pip install {package}): {', '.join(skipped)}")


def compile_figures(family: str, steps: int, mode: str = "default") -> None:
    """train.loop's ``compile`` on the family's benchmark graph (sd: the quickstart): an eager run, a
    compiled run and an eager run again (after a warm-up run), the same batches and steps. The compiled
    run's median step excludes its first step, which compiles (its time is printed on its own)."""
    import torch

    graph, fields = {"sd": (ROOT / "graphs" / "quickstart.yaml", ("latent", "embedding")),
                     "sdxl": (SDXL_GRAPH, SDXL_FIELDS), "flux": (FLUX_GRAPH, FLUX_FIELDS)}[family]
    counters = torch._dynamo.utils.counters
    with tempfile.TemporaryDirectory() as tmp:
        # sd: square images, so every batch has one shape (each shape compiles on its own)
        sets = (f"dataset={example_images(Path(tmp) / 'images')}",) if family == "sd" else ()
        graph_bench(graph, fields, steps, Path(tmp) / "warmup", sets=sets)
        first = graph_bench(graph, fields, steps, Path(tmp) / "eager1", sets=sets)[0]
        hits = counters["inductor"]["fxgraph_cache_hit"]
        compiled = graph_bench(graph, fields, steps, Path(tmp) / "compiled", sets=(*sets, f"train.compile={mode}"))[0]
        cached = counters["inductor"]["fxgraph_cache_hit"] > hits
        second = graph_bench(graph, fields, steps, Path(tmp) / "eager2", sets=sets)[0]
    shapes = len({tuple(s.items()) for s in compiled.shapes})
    eager, eager_cpu = first.times + second.times, first.cpu + second.cpu
    e, c = statistics.median(eager), statistics.median(compiled.times[1:])
    ec, cc = statistics.median(eager_cpu), statistics.median(compiled.cpu[1:])
    print(f"compile: {family} tiny model, {steps} steps per run (torch threads: {torch.get_num_threads()}), "
          f"train.loop compile={mode}; {shapes} batch shape(s): {shape_counts(compiled.shapes)}")
    print(f"eager    median step   {e * 1000:8.2f} ms   (CPU {ec * 1000:.2f} ms; {len(eager)} steps in 2 runs)")
    print(f"compiled median step   {c * 1000:8.2f} ms   (CPU {cc * 1000:.2f} ms; {len(compiled.times) - 1} steps "
          "after the first)")
    print(f"ratio compiled / eager {c / e:8.3f}   (CPU time {cc / ec:.3f})")
    print(f"compile time           {compiled.times[0] - e:8.1f} s   (the compiled run's first step less an eager "
          f"step; inductor's on-disk cache: {'hit, compiled before' if cached else 'cold'}; another batch shape "
          "compiles again)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("sd", "sdxl", "flux"), default="sd",
                    help="the model family: sd (the quickstart), sdxl or flux (the tiny model's LoRA graph)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default: 60; sdxl 30, flux 100)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quickstart", action="store_true",
                    help="also measure the quickstart's wall time and peak RSS (sd only)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of alternating runs (graph / plain loop, and plain / hooked graph; default: 4, "
                         "sdxl 6, flux 10)")
    ap.add_argument("--no-lifecycle", action="store_true", help="skip the hooks, backup and resume figures (sd only)")
    ap.add_argument("--no-example", action="store_true",
                    help="skip the comparison with the diffusers example's way of training (sd only)")
    ap.add_argument("--optimizers", nargs="?", const="all", default=None, metavar="NAMES",
                    help="only the step time of each installed optimizer against AdamW on the tiny SD model "
                         "(NAMES: a comma-separated subset; default all; steps default 20)")
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="only compiled (train.loop compile=MODE, default 'default') against eager step time")
    args = ap.parse_args()
    steps_default = args.steps is None
    # sdxl, flux: more rounds, under ~3 minutes on one thread, alternating often (evens out load); the tiny
    # Flux step is ~15 ms, so its runs are longer (the first epoch, which fills the cache, weighs less)
    args.steps = args.steps or {"sd": 60, "sdxl": 30, "flux": 100}[args.family]
    args.rounds = args.rounds or {"sd": 4, "sdxl": 6, "flux": 10}[args.family]
    if args.family != "sd" and args.quickstart:
        ap.error("--quickstart measures the SD quickstart: it does not go with --family " + args.family)
    if args.compile and args.compile not in COMPILE_MODES[1:]:
        ap.error(f"--compile {args.compile}: choose one of {', '.join(COMPILE_MODES[1:])}")
    if args.family != "sd" and args.optimizers:
        ap.error("--optimizers measures the tiny SD model: it does not go with --family " + args.family)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.optimizers:
        names = None if args.optimizers == "all" else tuple(n.strip() for n in args.optimizers.split(","))
        optimizer_figures(20 if steps_default else args.steps, names)
        return
    if args.compile:
        compile_figures(args.family, args.steps, args.compile)
        return
    if args.family != "sd":
        pair_figures(args.family, args.steps, args.rounds)
        return
    graph_times, plain_times, pairs = compare(args.steps, args.rounds)
    g, p = statistics.median(graph_times), statistics.median(plain_times)
    print(f"steps per run          {args.steps} (torch threads: {torch.get_num_threads()}); "
          f"{args.rounds} rounds after a warm-up round")
    print(f"graph   median step    {g * 1000:8.2f} ms   (mean {statistics.mean(graph_times) * 1000:.2f} ms)")
    print(f"plain   median step    {p * 1000:8.2f} ms   (mean {statistics.mean(plain_times) * 1000:.2f} ms)")
    print(f"ratio graph / plain    {g / p:8.3f}   (target <= 1.05; per round: "
          + ", ".join(f"{r:.3f}" for r in pairs) + ")")
    print(f"peak RSS (this process) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MB")
    if not args.no_example:
        against_example(args.steps, args.rounds)
    optimizer_step_figures(args.rounds)
    if not args.no_lifecycle:
        lifecycle(args.steps, args.rounds)
    if args.quickstart:
        wall, rss, code = quickstart_rss()
        print(f"quickstart             {wall:8.1f} s wall, peak RSS {rss:.0f} MB (target <= 1536 MB), exit {code}")


if __name__ == "__main__":
    main()
