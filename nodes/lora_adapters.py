"""Adding adapters (peft) to a diffusers or transformers part: shared by the families' LoRA setups.

The kinds (param ``adapter``): ``lora``; ``dora`` (LoRA with weight decomposition, peft's
``use_dora``); ``locon`` (LoRA also on the 3x3 convolutions of the UNet's resnet blocks and
down/up-samplers, with their own rank and alpha); ``loha`` (Hadamard product of two low-rank pairs,
peft's ``LoHaConfig``); ``lokr`` (Kronecker product, ``LoKrConfig``); ``oft`` (block-diagonal
orthogonal rotation, ``OFTConfig``). Each kind's own params say in their doc which kind they are
for; setting one for another kind is a validation error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nodes.lora_targets import conv_modules, target_modules
from runtime import Choice, Param, Seed

KINDS = ("lora", "dora", "locon", "loha", "lokr", "oft")
#: the kinds whose layers are LoRA pairs (lora_A / lora_B) in peft
LORA_KINDS = ("lora", "dora", "locon")
#: each kind-specific param -> the kinds it applies to
KIND_PARAMS = {"conv_rank": ("locon",), "conv_alpha": ("locon",), "lokr_factor": ("lokr",),
               "lokr_decompose_both": ("lokr",), "oft_block_size": ("oft",), "oft_coft": ("oft",),
               "oft_eps": ("oft",)}
KIND_NAMES = {"lora": "LoRA", "dora": "DoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "oft": "OFT",
              "full": "full-weight difference (LyCORIS diff)"}


@dataclass
class LoraInfo:
    """What an adapter setup did: savers write it into the file metadata. ``parts``: the adapted parts;
    ``kind``: one of ``KINDS``; ``conv_rank`` / ``conv_alpha``: LoCon's 3x3 convolution adapters."""

    rank: int
    alpha: float
    targets: str
    unet: bool = True
    text_encoder: bool = False
    adapter_name: str = "default"
    parts: tuple[str, ...] = field(default=("unet",))
    kind: str = "lora"
    conv_rank: int = 0
    conv_alpha: float = 0.0
    options: dict = field(default_factory=dict)


class LoraParams:
    """The adapter params of a family's LoRA setup node (the node adds which text encoders get adapters).
    ``conv_adapters``: whether the family's denoiser has 3x3 convolutions LoCon can adapt."""

    conv_adapters = True
    adapter = Param(Choice(*KINDS), "lora",
                    doc="adapter kind: lora, dora (weight-decomposed LoRA), locon (LoRA also on 3x3 convs), "
                        "loha (Hadamard), lokr (Kronecker), oft (orthogonal rotation)")
    rank = Param(int, 16, min=1, max=1024, doc="rank (dimension) of lora/dora/locon/loha/lokr; unused by oft")
    alpha = Param(float, 16.0, min=0, doc="alpha; the update is scaled by alpha / rank (lora/dora/locon/loha/lokr)")
    dropout = Param(float, 0.0, min=0, max=1,
                    doc="dropout in training: lora/dora/locon on the adapter input, loha/lokr/oft of whole modules")
    targets = Param(Choice("attn", "attn-mlp", "all-linear"), "attn",
                    doc="which layers get adapters: attention projections, + feed-forward, or every linear layer")
    target_regex = Param(str, optional=True,
                         doc="instead of the preset: a regex matched against full module names (e.g. .*attn2.*)")
    init = Param(Choice("default", "gaussian"), "default",
                 doc="adapter initialisation: default (no-op start) or gaussian (lora/dora/locon: gaussian A, zero B)")
    seed = Param(Seed, 0, doc="seed of the adapter initialisation (mixed with the node id)")
    conv_rank = Param(int, 8, min=1, max=1024, doc="locon only: rank of the adapters on 3x3 convolutions")
    conv_alpha = Param(float, 8.0, min=0, doc="locon only: alpha of the 3x3-convolution adapters")
    lokr_factor = Param(int, -1, min=-1, max=1024,
                        doc="lokr only: size of the Kronecker factor a dimension is split by (-1: most balanced)")
    lokr_decompose_both = Param(bool, False, doc="lokr only: also split the smaller Kronecker factor into low rank")
    oft_block_size = Param(int, 32, min=1, max=4096,
                           doc="oft only: size of the orthogonal blocks (divides each adapted layer's input width)")
    oft_coft = Param(bool, False, doc="oft only: constrained OFT (keeps the rotation within oft_eps of identity)")
    oft_eps = Param(float, 6e-5, min=0, doc="oft only: COFT's bound on the rotation (with oft_coft)")

    def check(self, c):
        """Before the run: no param of another adapter kind, no 3x3-conv adapters where the family has none."""
        for problem, param in adapter_problems(self):
            c.error(problem, param=param)


def _defaults(cls) -> dict:
    spec = getattr(cls, "__node_spec__", None)
    if spec is not None:
        return {n: p.default for n, p in spec.params.items()}
    return {n: getattr(LoraParams, n).default for n in KIND_PARAMS}


def adapter_problems(node) -> list[tuple[str, str]]:
    """``(message, param)`` for each setting that does not fit the node's adapter kind."""
    kind = node.adapter or "lora"
    out = []
    defaults = _defaults(type(node))
    for name, kinds in KIND_PARAMS.items():
        value = getattr(node, name, None)
        if kind not in kinds and name in defaults and value != defaults[name]:
            out.append((f"param '{name}' is for adapter {'/'.join(kinds)} only (adapter is {kind}); "
                        f"remove it or set adapter: {kinds[0]}", name))
    if kind == "locon" and not type(node).conv_adapters:
        out.append(("adapter locon adapts 3x3 convolutions, which this model's denoiser does not have "
                    "(no kohya-format loader could place them): use lora or dora", "adapter"))
    if node.init == "gaussian" and kind not in LORA_KINDS:
        out.append((f"param 'init': gaussian is for adapter lora/dora/locon only (adapter is {kind})", "init"))
    return out


def check_adapter(node) -> None:
    """Raise the first problem of ``adapter_problems`` (for a node run without validation)."""
    problems = adapter_problems(node)
    if problems:
        raise ValueError(problems[0][0])


def adapter_options(node) -> dict:
    """The settings of the node's adapter kind (``add_lora``'s keyword arguments beyond rank and alpha)."""
    return {"kind": node.adapter or "lora", "conv_rank": node.conv_rank, "conv_alpha": node.conv_alpha,
            "lokr_factor": node.lokr_factor, "lokr_decompose_both": node.lokr_decompose_both,
            "oft_block_size": node.oft_block_size, "oft_coft": node.oft_coft, "oft_eps": node.oft_eps}


def lora_info(node, targets: str, parts, **kw) -> LoraInfo:
    """The ``LoraInfo`` of an adapter setup node."""
    kind = node.adapter or "lora"
    opts = {k: v for k, v in adapter_options(node).items() if k != "kind" and kind in KIND_PARAMS.get(k, ())}
    locon = kind == "locon"
    return LoraInfo(node.rank, node.alpha, targets, parts=tuple(parts), kind=kind,
                    conv_rank=node.conv_rank if locon else 0, conv_alpha=node.conv_alpha if locon else 0.0,
                    options=opts, **kw)


def describe(info: LoraInfo) -> str:
    """``LoRA rank 4, alpha 2`` (what the logs say of an adapter)."""
    name = KIND_NAMES.get(info.kind, info.kind)
    if info.kind == "oft":
        return f"{name} block size {info.options.get('oft_block_size')}"
    text = f"{name} rank {info.rank}, alpha {info.alpha}"
    if info.kind == "locon":
        text += f" (3x3 convs rank {info.conv_rank}, alpha {info.conv_alpha})"
    return text


def check_regex(regex: str | None) -> str | None:
    """``regex`` if it compiles (None for empty), else a ValueError naming the param."""
    if not regex:
        return None
    try:
        re.compile(regex)
    except re.error as e:
        raise ValueError(f"param 'target_regex': {regex!r} is not a valid regular expression: {e}") from None
    return regex


def peft_config(kind: str, targets: list[str], *, rank: int, alpha: float, dropout: float, init: str,
                conv_targets: list[str] = (), conv_rank: int = 8, conv_alpha: float = 8.0, lokr_factor: int = -1,
                lokr_decompose_both: bool = False, oft_block_size: int = 32, oft_coft: bool = False,
                oft_eps: float = 6e-5):
    """The peft config of one adapter ``kind`` over the full module names ``targets`` (+ LoCon's
    ``conv_targets``, which get ``conv_rank`` / ``conv_alpha``)."""
    import peft

    if kind in LORA_KINDS:
        convs = list(conv_targets) if kind == "locon" else []
        exact = {re.escape(n): None for n in convs}
        return peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, use_dora=kind == "dora",
                               init_lora_weights=True if init == "default" else "gaussian",
                               target_modules=list(targets) + convs,
                               rank_pattern={k: conv_rank for k in exact}, alpha_pattern={k: conv_alpha for k in exact})
    if kind == "loha":
        return peft.LoHaConfig(r=rank, alpha=alpha, module_dropout=dropout, target_modules=list(targets),
                               init_weights=True)
    if kind == "lokr":
        return peft.LoKrConfig(r=rank, alpha=alpha, module_dropout=dropout, target_modules=list(targets),
                               decompose_both=lokr_decompose_both, decompose_factor=lokr_factor, init_weights=True)
    if kind == "oft":
        return peft.OFTConfig(r=0, oft_block_size=oft_block_size, module_dropout=dropout,
                              target_modules=list(targets), coft=oft_coft, eps=oft_eps, init_weights=True)
    raise ValueError(f"param 'adapter': unknown adapter kind {kind!r} (kinds: {', '.join(KINDS)})")


def _check_oft_blocks(module, targets: list[str], block_size: int, name: str) -> None:
    import torch

    layers = dict(module.named_modules())
    for t in targets:
        layer = layers[t]
        width = layer.in_features if isinstance(layer, torch.nn.Linear) else (
            layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1])
        if width % block_size:
            raise ValueError(f"param 'oft_block_size': {block_size} does not divide the input width {width} of the "
                             f"{name}'s layer {t}; choose a divisor of every adapted layer's width")


def add_lora(ctx, name: str, module, *, rank: int, alpha: float, dropout: float, preset: str,
             regex: str | None, presets: dict, init: str, seed: int, kind: str = "lora", conv: bool = False,
             **options) -> int:
    """Add one peft adapter of ``kind`` to ``module`` (named ``name`` in messages); returns its trainable
    count. ``conv``: with kind locon, the part's 3x3 convolutions get adapters too (a UNet's).

    The initial weights are drawn under ``ctx.torch_seeded(seed, name)`` (peft uses torch's generator);
    adapters train in float32 even on a half-precision base."""
    targets = target_modules(module, preset, regex, presets)
    if not targets:
        raise ValueError(f"no layer of the {name} matches " + (f"target_regex {regex!r}" if regex else f"preset {preset!r}"))
    conv_targets = conv_modules(module) if conv and kind == "locon" else []
    if kind == "oft":
        _check_oft_blocks(module, targets, options.get("oft_block_size", 32), name)
    config = peft_config(kind, targets, rank=rank, alpha=alpha, dropout=dropout, init=init,
                         conv_targets=conv_targets, **options)
    with ctx.torch_seeded(seed, name):
        try:
            module.add_adapter(config)
        except ValueError as e:
            if "quantized" not in str(e):
                raise
            raise ValueError(f"param 'adapter': peft cannot put {kind} adapters on the {name}'s quantized layers "
                             f"({e}); use lora, dora, loha or lokr, or load the model unquantized") from None
    for p in module.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
