"""Speed and memory options of ``train.loop``, one function per option; ``Options`` holds them for a run.

- ``compile_denoiser``: ``torch.compile`` of the denoiser part, in place (``nn.Module.compile``: parameter
  names stay, so adapters, savers and backups see the same module); hooks run it uncompiled.
- ``build_optimizer``: the optimizer's kernel (fused / foreach / for-loop) through the spec's ``build``.
- ``tf32``: TensorFloat-32 matmuls and convolutions on CUDA, restored at the end.
- ``attention``: the scaled-dot-product-attention backend (``torch.nn.attention.sdpa_kernel``).
- ``offload``: activations saved for backward kept in (pinned) CPU memory (``save_on_cpu``).

Layer offloading is not here: diffusers' ``enable_group_offload`` moves blocks for inference only.
No torch import at module level (listing nodes must not need it).
"""

from __future__ import annotations

import contextlib
import inspect
import shutil

NODE = "train.loop"
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTENTION = ("auto", "math", "flash", "efficient", "cudnn")
KERNELS = ("auto", "fused", "foreach", "for-loop")
#: the part names that hold a denoiser, in the order looked for (a bundle may name its own: ``denoiser_part``)
DENOISER_PARTS = ("unet", "transformer")
#: the torch.compile backend (the tests use a counting one: inductor compiles for tens of seconds on a CPU)
COMPILE_BACKEND = "inductor"
#: torch's SDPBackend member of each ``attention`` choice
SDP_BACKENDS = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "cudnn": "CUDNN_ATTENTION"}
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: devices whose memory is the CPU's: offloading activations to it does nothing there
HOST_DEVICES = ("cpu",)


def denoiser(model) -> tuple[str, object]:
    """(name, module) of the part that predicts the noise: the bundle's ``denoiser_part``, else the first
    of ``DENOISER_PARTS`` it has; none is an error."""
    parts = model.parts()
    names = [getattr(model, "denoiser_part", None) or "", *DENOISER_PARTS]
    for name in names:
        if name in parts:
            return name, parts[name]
    raise ValueError(f"{NODE}: compile: the model has no denoiser part to compile (looked for "
                     f"{', '.join(n for n in names if n)}; it has {', '.join(parts) or 'no parts'}); set compile: off")


@contextlib.contextmanager
def compile_denoiser(ctx, model, device, mode: str):
    """Compile the denoiser in place for the block (``mode`` "off": nothing); uncompiled again after it,
    so samplers and savers downstream run it eagerly. Each batch shape compiles once (buckets: one compile
    each, up to torch's recompile limit, 8, then that shape runs eagerly). Yields whether it compiled."""
    if mode == "off":
        yield False
        return
    name, part = denoiser(model)
    if device.type == "cpu" and COMPILE_BACKEND == "inductor" and not any(
            shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ValueError(f"{NODE}: compile on the CPU needs a C++ compiler (g++), which is not installed; "
                         "install it or set compile: off")
    ctx.log(f"compiling the {name} with torch.compile (mode {mode}): the first steps are slow while it compiles")
    # dynamic=False: one static graph per batch shape (a few buckets); inductor's dynamic-shape graphs
    # of diffusers' UNet failed to compile their backward (torch 2.13, "ValueRangeError")
    part.compile(backend=COMPILE_BACKEND, dynamic=False, **({"mode": mode} if COMPILE_BACKEND == "inductor" else {}))
    try:
        yield True
    finally:
        part._compiled_call_impl = None  # what compile() set: nn.Module has no public way back


def eager(compiled: bool):
    """A factory of the context that runs compiled modules eagerly (hooks: previews, validation), so
    their other shapes and no-grad calls do not compile again."""
    if not compiled:
        return contextlib.nullcontext
    import torch

    return lambda: torch.compiler.set_stance("force_eager")


def build_optimizer(spec, groups: list, kernel: str):
    """``spec.build(groups)``, with ``kernel=`` unless it is "auto" (the spec's own choice)."""
    if kernel == "auto":
        return spec.build(groups)
    if "kernel" not in inspect.signature(spec.build).parameters:
        raise ValueError(f"{NODE}: optimizer_kernel {kernel!r}: this optimizer spec ({type(spec).__name__}) has "
                         "no kernel choice; set optimizer_kernel: auto")
    return spec.build(groups, kernel=kernel)


@contextlib.contextmanager
def tf32(ctx, device, on: bool):
    """TF32 matmuls and cuDNN convolutions in the block on CUDA (torch's settings restored after it);
    elsewhere nothing, said once in the log."""
    if not on:
        yield
        return
    if device.type != "cuda":
        ctx.log(f"tf32: {device.type} has no TF32 mode; the option does nothing here")
        yield
        return
    import torch

    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def attention_works(device, backend: str, precision: str) -> str | None:
    """None when the ``backend`` runs a small attention forward and backward on ``device`` in the
    precision's dtype, else torch's reason. (A kernel may still refuse a model's own head size.)"""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = getattr(torch, PRECISION_DTYPES[precision])
    q = torch.randn(1, 2, 16, 64, device=device, generator=torch.Generator(device).manual_seed(0),
                    dtype=dtype, requires_grad=True)
    try:
        with sdpa_kernel(getattr(SDPBackend, SDP_BACKENDS[backend])):
            torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    except RuntimeError as e:
        return str(e).strip().splitlines()[0][:200]
    return None


def attention(device, backend: str, precision: str):
    """A factory of the ``sdpa_kernel`` context for ``backend`` ("auto": torch's choice); a backend this
    device cannot run is an error that names the ones it can."""
    if backend == "auto":
        return contextlib.nullcontext
    why = attention_works(device, backend, precision)
    if why:
        ok = [b for b in SDP_BACKENDS if b != backend and attention_works(device, b, precision) is None]
        raise ValueError(f"{NODE}: attention {backend!r} is not available on {device.type} in {precision} "
                         f"({why}); choose auto or {', '.join(ok) or 'none'}")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, SDP_BACKENDS[backend])
    return lambda: sdpa_kernel(chosen)


def offload(ctx, device, on: bool):
    """A factory of the context that keeps the activations saved for backward in CPU memory (pinned on
    CUDA) until backward needs them; on a CPU nothing (they are there already), said in the log."""
    if not on:
        return contextlib.nullcontext
    if device.type in HOST_DEVICES:
        ctx.log("offload_activations: training on the CPU, activations are in CPU memory already; "
                "the option does nothing here")
        return contextlib.nullcontext
    import torch

    pin = device.type == "cuda"
    return lambda: torch.autograd.graph.save_on_cpu(pin_memory=pin)


class Options:
    """The speed options of one run. Built before training (a backend the device lacks fails there);
    ``with`` it around the steps: TF32 and the compiled denoiser hold inside and are undone after.

    ``step()`` is around each micro-step (forward and backward), ``forward()`` around the forward,
    ``hooks()`` around hook calls."""

    def __init__(self, ctx, model, device, precision: str, node=None):
        self.ctx, self.model, self.device = ctx, model, device
        self.compile_mode = getattr(node, "compile", "off")
        self.tf32_on = getattr(node, "tf32", False)
        self.step = attention(device, getattr(node, "attention", "auto"), precision)
        self.forward = offload(ctx, device, getattr(node, "offload_activations", False))
        self.hooks = contextlib.nullcontext
        self._stack = contextlib.ExitStack()
        if self.compile_mode != "off":
            denoiser(model)  # no denoiser: an error now, not after the setup

    def __enter__(self) -> Options:
        self._stack.enter_context(tf32(self.ctx, self.device, self.tf32_on))
        compiled = self._stack.enter_context(compile_denoiser(self.ctx, self.model, self.device, self.compile_mode))
        self.hooks = eager(compiled)
        return self

    def __exit__(self, *exc) -> None:
        self.hooks = contextlib.nullcontext
        self._stack.close()
