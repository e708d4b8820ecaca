"""Memory of the frozen Flux weights quantized (int8, fp8, nf4; nodes.quantize) against bf16, in one run.

Two model sizes, each as transformer + T5 encoder, each part built in bf16 and quantized as
flux.load_model's ``quantize`` param does:
- tiny: the built-in tiny Flux (nodes.flux.build.build_tiny), its parts made bf16;
- real width: a Flux transformer of FLUX.1's width (hidden 3072, 24 heads, T5 width 4096, CLIP pooled
  768) with 1 double and 1 single block, and a T5-XXL-width encoder (d_model 4096, d_ff 10240, 64 heads)
  with 1 layer: the ratios a full FLUX.1-dev (19 + 38 blocks) and T5-XXL (24 layers) get, at about 1.7 GB.
  Their weights are seeded normal draws (std 0.02), not the modules' own (slow) initialisation.

For each scheme it prints the weight bytes (exact: what the tensors store, nodes.quantize.weight_bytes;
from the real-width blocks also those of the full FLUX.1-dev transformer and T5-XXL, computed per block),
the memory the frozen parts hold once quantized, the peak while building and quantizing them, and (real
width, ``--step``) the peak of one LoRA training step of the transformer (forward + backward, rank 16 on
the attention, 64 image and 16 text tokens). Memory is the allocator's: on CUDA (``--device cuda``)
torch.cuda's allocated bytes (the parts are built and quantized on the CPU, then moved, as a loader hands
them to the loop); on a CPU, glibc's ``mallinfo2`` allocated bytes (not RSS), with the peak sampled every
0.5 ms, which can miss a transient shorter than that.

    python benchmarks/bench_quantize.py [--schemes int8,fp8,nf4] [--skip-real] [--step] [--device cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
#: FLUX.1's transformer widths, with one double and one single block
REAL_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))
#: T5-XXL's widths (google/t5-v1_1-xxl), one layer
REAL_T5 = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=1, num_heads=64,
               feed_forward_proj="gated-gelu", is_gated_act=True, dense_act_fn="gelu_new")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


class Meter:
    """Allocated bytes now and their peak since ``reset``: torch.cuda's counters, or glibc's on a CPU."""

    def __init__(self, device: str):
        import torch

        self.cuda = device == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        if not self.cuda:
            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.mallinfo2.restype = _MallInfo2
        self._peak = 0
        self._stop = threading.Event()
        self._thread = None

    def now(self) -> int:
        if self.cuda:
            import torch

            return torch.cuda.memory_allocated()
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        self._peak = self.now()
        if self._thread is None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def peak(self) -> int:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return max(self._peak, self.now())

    def _sample(self) -> None:
        while not self._stop.wait(0.0005):
            self._peak = max(self._peak, self.now())

    def close(self) -> None:
        self._stop.set()


#: FLUX.1-dev's blocks (double, single) and T5-XXL's layers, for the full-size weights computed per block
FULL_BLOCKS = {"double": 19, "single": 38, "t5_layer": 24}


@dataclass
class Row:
    size: str
    scheme: str
    transformer_bytes: int  # exact, from the tensors
    t5_bytes: int
    held: int  # allocated once built and quantized (on the device)
    peak_build: int  # peak while building and quantizing
    peak_step: int | None = None  # peak of one LoRA step, weights included
    full_transformer: int = 0  # weight bytes at FLUX.1-dev's 19 + 38 blocks (real width only)
    full_t5: int = 0  # weight bytes at T5-XXL's 24 layers

    @property
    def weight_bytes(self) -> int:
        return self.transformer_bytes + self.t5_bytes


def full_size(transformer, t5) -> tuple[int, int]:
    """Weight bytes of the full FLUX.1-dev transformer and T5-XXL, from these one-block models' bytes."""
    from nodes.quantize import weight_bytes

    double = weight_bytes(transformer.transformer_blocks[0]).total
    single = weight_bytes(transformer.single_transformer_blocks[0]).total
    layer = weight_bytes(t5.encoder.block[1 if len(t5.encoder.block) > 1 else 0]).total
    n = FULL_BLOCKS
    tr = weight_bytes(transformer).total + (n["double"] - 1) * double + (n["single"] - 1) * single
    return tr, weight_bytes(t5).total + (n["t5_layer"] - 1) * layer


def build_parts(size: str):
    """(transformer, T5 encoder) of ``size`` in bf16, with seeded random weights."""
    import torch

    if size == "tiny":
        from nodes.flux.build import build_tiny

        model = build_tiny(seed=0)
        return model.transformer.to(torch.bfloat16), model.text_encoder_2.to(torch.bfloat16)
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # weights made in bf16, never a float32 copy
    try:
        with torch.device("meta"):  # shapes only; the weights are drawn below (a module's own init is slow)
            parts = FluxTransformer2DModel(**REAL_TRANSFORMER), T5EncoderModel(T5Config(**REAL_T5))
    finally:
        torch.set_default_dtype(before)
    g = torch.Generator().manual_seed(0)
    out = []
    for part in parts:
        part = part.to_empty(device="cpu")
        if hasattr(part, "tie_weights"):
            part.tie_weights()  # to_empty unties T5's shared token embedding
        with torch.no_grad():
            for p in part.parameters():
                p.normal_(0.0, 0.02, generator=g)
        out.append(part.eval().requires_grad_(False))
    return tuple(out)


def measure(meter: Meter, size: str, scheme: str, device: str, step: bool) -> Row:
    from nodes.quantize import quantize_frozen, weight_bytes

    gc.collect()
    base = meter.now()
    meter.reset()
    transformer, t5 = build_parts(size)
    for part in (transformer, t5):
        quantize_frozen(part, scheme)
    transformer.to(device)
    t5.to(device)
    gc.collect()
    row = Row(size, scheme, weight_bytes(transformer).total, weight_bytes(t5).total,
              meter.now() - base, meter.peak() - base)
    if size != "tiny":
        row.full_transformer, row.full_t5 = full_size(transformer, t5)
    if step:
        del t5, part
        gc.collect()
        meter.reset()
        lora_step(transformer, device)
        row.peak_step = meter.peak() - base
    del transformer
    gc.collect()
    return row


def lora_step(transformer, device: str, rows: int = 8, text: int = 16) -> None:
    """One flow-matching LoRA step (rank 16 on the attention) at ``rows``² image and ``text`` text tokens
    (few: a CPU without bf16 units emulates bf16 matmuls, so a step at real width takes a while)."""
    import torch
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    cfg = transformer.config
    g = torch.Generator().manual_seed(0)
    n = rows * rows
    x0 = torch.randn(1, n, cfg.in_channels, generator=g)
    txt = torch.randn(1, text, cfg.joint_attention_dim, generator=g)
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g)
    noise, sigma = torch.randn(x0.shape, generator=g), torch.rand(1, generator=g)
    ids = torch.zeros(n, 3)
    ids[:, 1], ids[:, 2] = torch.arange(n) // rows, torch.arange(n) % rows
    bf = dict(device=device, dtype=torch.bfloat16)
    x_t = ((1 - sigma) * x0 + sigma * noise).to(**bf)
    out = transformer(hidden_states=x_t, timestep=sigma.to(**bf), guidance=torch.full((1,), 1.0, **bf),
                      encoder_hidden_states=txt.to(**bf), pooled_projections=pooled.to(**bf),
                      img_ids=ids.to(**bf), txt_ids=torch.zeros(text, 3, **bf), return_dict=False)[0]
    torch.nn.functional.mse_loss(out.float(), (noise - x0).to(device)).backward()
    torch.optim.AdamW(params, lr=1e-4).step()


def report(rows: list[Row]) -> None:
    print("Measured (MiB; ratio: against bf16 of the same model)")
    print(f"{'model':<11}{'scheme':<7}{'transformer':>12}{'T5':>9}{'weights':>9}{'ratio':>7}{'held':>9}{'ratio':>7}"
          f"{'peak build':>11}{'peak step':>10}{'ratio':>7}")
    for r in rows:
        ref = _ref(rows, r)
        step = f"{r.peak_step / MIB:>10.1f}{r.peak_step / ref.peak_step:>7.2f}" if r.peak_step else ""
        print(f"{r.size:<11}{_name(r):<7}{r.transformer_bytes / MIB:>12.2f}{r.t5_bytes / MIB:>9.2f}"
              f"{r.weight_bytes / MIB:>9.2f}{r.weight_bytes / ref.weight_bytes:>7.2f}{r.held / MIB:>9.2f}"
              f"{r.held / max(ref.held, 1):>7.2f}{r.peak_build / MIB:>11.1f}{step}")
    full = [r for r in rows if r.full_transformer]
    if full:
        gib = 1024 * MIB
        print("\nComputed from the real-width blocks' bytes: FLUX.1-dev transformer (19 double + 38 single blocks) "
              "and T5-XXL (24 layers), GiB")
        print(f"{'scheme':<7}{'transformer':>12}{'ratio':>7}{'T5-XXL':>9}{'ratio':>7}{'both':>8}{'ratio':>7}")
        for r in full:
            ref = _ref(rows, r)
            both, ref_both = r.full_transformer + r.full_t5, ref.full_transformer + ref.full_t5
            print(f"{_name(r):<7}{r.full_transformer / gib:>12.2f}{r.full_transformer / ref.full_transformer:>7.2f}"
                  f"{r.full_t5 / gib:>9.2f}{r.full_t5 / ref.full_t5:>7.2f}{both / gib:>8.2f}{both / ref_both:>7.2f}")


def _ref(rows: list[Row], row: Row) -> Row:
    return next(x for x in rows if x.size == row.size and x.scheme == "none")


def _name(row: Row) -> str:
    return "bf16" if row.scheme == "none" else row.scheme


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemes", default="int8,fp8,nf4", help="comma-separated schemes besides bf16")
    ap.add_argument("--skip-real", action="store_true", help="only the tiny model (seconds)")
    ap.add_argument("--step", action="store_true", help="also the peak of one LoRA step at real width")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args(argv)

    import torch

    from nodes.quantize import check_scheme

    schemes = ["none", *[s for s in args.schemes.split(",") if s]]
    for s in schemes:
        check_scheme(s, args.device)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    meter = Meter(args.device)
    rows = []
    try:
        for scheme in schemes:  # warm-up: imports and first-call caches are not the weights' memory
            measure(meter, "tiny", scheme, args.device, False)
        for size in ["tiny"] + ([] if args.skip_real else ["real-width"]):
            for scheme in schemes:
                t0 = time.perf_counter()
                rows.append(measure(meter, size, scheme, args.device, args.step and size != "tiny"))
                print(f"  {size} {scheme}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        meter.close()
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
