"""Quantized frozen weights: the Linear layers of a frozen part (a transformer, a T5 encoder) stored in
int8, float8 or NF4, with LoRA adapters training on top in full precision.

Schemes (all weight-only: activations and the matmul stay in the part's dtype):
  ``none``  unchanged
  ``int8``  int8 per output row with a scale (torchao ``Int8WeightOnlyConfig``): about half of bf16
  ``fp8``   float8 e4m3 per row with a scale (torchao ``Float8WeightOnlyConfig``): about half of bf16
  ``nf4``   4-bit NormalFloat in blocks of 64 weights, the scales quantized in blocks of 256 (QLoRA's
            format; torchao ``NF4Tensor``): about a quarter of bf16. A layer whose weight count is not
            a multiple of 64 x 256 = 16,384 stays unquantized and is named in the report (none of Flux's
            or T5-XXL's at real size; most of a tiny model's).

Every Linear layer of the part is quantized, including the ones LoRA targets: peft wraps the quantized
layer as the adapter's base layer (for torchao weights it dispatches ``TorchaoLoraLinear``; an NF4 weight
goes through peft's plain ``lora.Linear``, whose base layer computes with the dequantized weight), so
gradients reach the adapters and the base stays quantized. Quantize before adding adapters. An int8 or
fp8 layer becomes a ``FrozenQuantizedLinear`` whose backward dequantizes its weight again: autograd would
otherwise keep a bf16 copy of every such weight from forward to backward (NF4's linear already does so).

Why torchao (0.18) rather than optimum-quanto or bitsandbytes:
- one library has all three schemes, and every one of them runs forward and backward on a CPU (verified
  with torch 2.13+cpu: a LoRA on an int8, fp8 or nf4 tiny Flux trains and its loss falls; an int8 step
  took 0.034 s against 0.035 s unquantized), so the CPU tests run the very code path that a GPU runs;
- peft has a torchao integration of its own (``peft.tuners.lora.torchao``), and diffusers loads
  torchao-quantized models (``TorchAoConfig``); it is PyTorch's own quantization library, released in
  step with torch, and its weight-only int8/fp8 kernels are written for CUDA and ``torch.compile``
  (GPU speed not measured for this choice: no GPU was at hand);
- optimum-quanto (qint8/qfloat8) also trains on a CPU, but its last release (0.2.7) is from March 2025
  and it has no NF4; bitsandbytes 0.50 runs int8 and nf4 on a CPU but has no fp8, and peft only picks
  up its layers when a model was loaded through transformers/diffusers with ``load_in_8bit``/``4bit``.

``torchao`` is an optional package: ``pip install "nodetrainer[quant]"``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

SCHEMES = ("none", "int8", "fp8", "nf4")
#: the devices torchao's weight-only schemes run on (others: an error before any work)
DEVICES = ("cpu", "cuda")
PACKAGE = "torchao"
EXTRA = "quant"
NF4_BLOCK = 64
#: NF4's scales are themselves quantized in blocks of this many scales
NF4_SCALER_BLOCK = 256

_DOCS = {"none": "unquantized", "int8": "int8 weight-only", "fp8": "float8 (e4m3) weight-only",
         "nf4": "NF4 (4-bit NormalFloat)"}


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of a module's weights (parameters and buffers): in quantized tensors, and in plain ones."""

    quantized: int
    plain: int

    @property
    def total(self) -> int:
        return self.quantized + self.plain


@dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize_frozen`` did: the scheme, the layers quantized and left, bytes before and after."""

    scheme: str
    layers: int
    skipped: tuple[str, ...]
    before: WeightBytes
    after: WeightBytes

    def summary(self, name: str) -> str:
        mib = 1024 * 1024
        left = f", {len(self.skipped)} left unquantized" if self.skipped else ""
        return (f"{name}: {self.layers} linear layers quantized to {_DOCS[self.scheme]} (torchao){left}; "
                f"weights {self.before.total / mib:.2f} MiB -> {self.after.total / mib:.2f} MiB")


def missing_package(scheme: str) -> str | None:
    """The one-line message when ``scheme`` needs torchao and it is not installed, else None."""
    if scheme == "none":
        return None
    if importlib.util.find_spec(PACKAGE) is None:
        return (f"quantize {scheme!r} needs the {PACKAGE!r} package, which is not installed: "
                f"pip install \"nodetrainer[{EXTRA}]\" (or pip install {PACKAGE}); or set quantize: none")
    return None


def check_scheme(scheme: str, device=None) -> None:
    """A one-line ValueError for an unknown scheme or a device torchao cannot run it on; an ImportError
    when torchao is missing. ``device``: a torch.device or its name (None: do not check)."""
    if scheme not in SCHEMES:
        raise ValueError(f"quantize: unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "none":
        return
    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device is not None else None)
    if kind is not None and kind not in DEVICES:
        raise ValueError(f"quantize {scheme!r} is not supported on the {kind} device (torchao's weight-only "
                         f"schemes run on {' and '.join(DEVICES)}); set quantize: none there")
    message = missing_package(scheme)
    if message:
        raise ImportError(message)


def quantize_frozen(module, scheme: str, ctx=None, name: str | None = None) -> QuantizeReport:
    """Quantize the Linear weights of ``module`` in place (``scheme``: none, int8, fp8 or nf4) and freeze
    them; other weights (norms, embeddings, biases) stay as they are. ``ctx`` (optional) logs a summary
    naming ``name``. Returns what was done. Call it before adding LoRA adapters."""
    check_scheme(scheme, _device_of(module))
    before = weight_bytes(module)
    if scheme == "none":
        return QuantizeReport(scheme, 0, (), before, before)
    _refuse_adapters(module, name)
    layers, skipped = 0, []
    for layer_name, layer in _plain_linears(module):
        if _quantize_linear(layer, scheme):
            layers += 1
        else:
            skipped.append(layer_name)
    report = QuantizeReport(scheme, layers, tuple(skipped), before, weight_bytes(module))
    if ctx is not None:
        ctx.log(report.summary(name or type(module).__name__))
    return report


def weight_bytes(module) -> WeightBytes:
    """Bytes of ``module``'s parameters and buffers as stored: a quantized tensor counts its data and
    scales (not the size its dtype would take); a tensor shared by two modules counts once."""
    quantized = plain = 0
    seen: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        n = tensor_bytes(t)
        if is_quantized(t):
            quantized += n
        else:
            plain += n
    return WeightBytes(quantized, plain)


def tensor_bytes(t) -> int:
    """Bytes ``t`` holds; a tensor subclass (torchao's quantized tensors) by its inner tensors."""
    import torch

    if is_quantized(t):
        inner, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in inner if isinstance(getattr(t, n), torch.Tensor))
    return t.numel() * t.element_size()


def is_quantized(t) -> bool:
    """Whether ``t`` is a quantized (wrapper-subclass) tensor rather than a plain one."""
    import torch

    data = t.data if isinstance(t, torch.nn.Parameter) else t
    return type(data) not in (torch.Tensor, torch.nn.Parameter) and hasattr(data, "__tensor_flatten__")


def _device_of(module):
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return None


def _refuse_adapters(module, name: str | None) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in module.modules()):
        raise ValueError(f"quantize: the {name or type(module).__name__} already has LoRA adapters; "
                         "quantize the frozen weights first, then add the adapters")


def _plain_linears(module):
    import torch

    for layer_name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        if (isinstance(layer, torch.nn.Linear) and weight is not None and weight.dim() == 2
                and weight.is_floating_point() and not is_quantized(weight)):
            yield layer_name, layer


def _quantize_linear(layer, scheme: str) -> bool:
    """Quantize one Linear's weight in place; False when the scheme cannot take its shape."""
    import torch

    if scheme == "nf4":
        weight = layer.weight.detach()
        # torchao's NF4 copies (deepcopy, a dtype change) re-quantize with its default blocks, so
        # only a weight those blocks divide is quantized
        if weight.numel() % (NF4_BLOCK * NF4_SCALER_BLOCK):
            return False
        from torchao.quantization import to_nf4

        layer.weight = torch.nn.Parameter(to_nf4(weight.contiguous(), NF4_BLOCK, NF4_SCALER_BLOCK),
                                          requires_grad=False)
        return True
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    # set_inductor_config=False: do not change torch._inductor's global settings
    config = (Int8WeightOnlyConfig(set_inductor_config=False) if scheme == "int8"
              else Float8WeightOnlyConfig(set_inductor_config=False))
    quantize_(layer, config, filter_fn=lambda m, fqn: m is layer)
    layer.__class__ = _frozen_linear_class()
    return True


_FROZEN_LINEAR = None


def _frozen_linear_class():
    """``torch.nn.Linear`` whose backward dequantizes the frozen weight again instead of keeping it.

    torchao's int8 and fp8 weights compute ``F.linear`` with a dequantized copy, and autograd saves
    that copy for the input's gradient: every layer behind the first adapter would hold its weight in
    bf16 from forward to backward, as much memory as not quantizing. NF4's own linear already does this."""
    global _FROZEN_LINEAR
    if _FROZEN_LINEAR is not None:
        return _FROZEN_LINEAR
    import torch

    class LinearOnFrozenWeight(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.weight = weight  # the quantized tensor itself, not a saved dequantized copy
            return torch.nn.functional.linear(x, weight, bias)

        @staticmethod
        def backward(ctx, grad):
            grad_x = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_x = grad @ ctx.weight.dequantize().to(grad.dtype)
            if ctx.needs_input_grad[2]:
                grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
            return grad_x, None, grad_bias

    class FrozenQuantizedLinear(torch.nn.Linear):
        """A Linear layer with a frozen int8 / fp8 weight (nodes.quantize)."""

        def forward(self, x):
            return LinearOnFrozenWeight.apply(x, self.weight, self.bias)

    _FROZEN_LINEAR = FrozenQuantizedLinear
    return _FROZEN_LINEAR
