"""Quantized frozen weights (nodes.quantize): bytes, closeness, LoRA training on top, clear errors."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from nodes.quantize import check_scheme, missing_package, quantize_frozen, weight_bytes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:TorchaoLoraLinear was instantiated")


def tiny_flux(head_dim: int = 16, seed: int = 0):
    """The tiny Flux-dev transformer of families.md 2.6 on packed latents (in_channels 64), bf16."""
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                       attention_head_dim=head_dim, num_attention_heads=2, joint_attention_dim=32,
                                       pooled_projection_dim=32, guidance_embeds=True,
                                       axes_dims_rope=(head_dim // 4, head_dim // 4, head_dim // 2))
    return model.to(torch.bfloat16).eval()


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    return model.to(torch.bfloat16).eval()


def batch(seed: int = 0, b: int = 2):
    """Packed latents (8x8 tokens of 64 channels), text states, pooled text and position ids, in bf16."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 64, 64, generator=g)
    txt = torch.randn(b, 24, 32, generator=g)
    pooled = torch.randn(b, 32, generator=g)
    img_ids = torch.zeros(64, 3)
    img_ids[:, 1], img_ids[:, 2] = torch.arange(64) // 8, torch.arange(64) % 8
    return [t.to(torch.bfloat16) for t in (x0, txt, pooled)] + [img_ids, torch.zeros(24, 3)]


def predict(model, x, sigma, txt, pooled, img_ids, txt_ids):
    return model(hidden_states=x, timestep=sigma, guidance=torch.full((x.shape[0],), 3.5, dtype=x.dtype),
                 encoder_hidden_states=txt, pooled_projections=pooled, img_ids=img_ids, txt_ids=txt_ids,
                 return_dict=False)[0]


def stored(p) -> list:
    """Copies of what a weight stores: a quantized tensor's inner tensors (data, scales), else itself."""
    if type(p) is torch.nn.Parameter:
        return [p.detach().clone()]
    return [getattr(p, name).clone() for name in p.__tensor_flatten__()[0]]


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / a.float().norm()).item()


@pytest.mark.parametrize("scheme, most", [("int8", 0.6), ("fp8", 0.6)])
def test_quantized_weights_take_about_half_the_bytes_of_bf16(scheme, most):
    model = tiny_flux()
    linear = sum(m.weight.numel() * 2 for m in model.modules() if isinstance(m, torch.nn.Linear))
    report = quantize_frozen(model, scheme)
    assert report.layers == sum(isinstance(m, torch.nn.Linear) for m in model.modules()) and not report.skipped
    assert report.before == weight_bytes(tiny_flux()) and report.before.quantized == 0
    assert report.after == weight_bytes(model)
    # the quantized tensors: one byte a weight plus per-row scales, against two bytes in bf16
    assert 0.5 <= report.after.quantized / linear < most
    assert report.after.plain == report.before.plain - linear
    assert report.after.total / report.before.total < 0.65


def test_nf4_takes_about_a_quarter_and_leaves_layers_its_blocks_do_not_divide():
    model = tiny_flux(head_dim=64)  # hidden 128: 128x128 attention weights fit NF4's 64x256 blocks
    report = quantize_frozen(model, "nf4")
    to_q = model.transformer_blocks[0].attn.to_q
    assert type(to_q.weight).__name__ == "NF4Tensor" and "transformer_blocks.0.attn.to_q" not in report.skipped
    assert "x_embedder" in report.skipped and type(model.x_embedder.weight) is torch.nn.Parameter  # 64x128
    quantized = [m for m in model.modules()
                 if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ == "NF4Tensor"]
    assert len(quantized) == report.layers and report.layers >= 8
    bf16 = sum(m.weight.numel() * 2 for m in quantized)
    assert 0.25 <= report.after.quantized / bf16 < 0.3


@pytest.mark.parametrize("scheme, most", [("int8", 0.03), ("fp8", 0.1)])
def test_quantized_transformer_outputs_stay_close(scheme, most):
    x0, txt, pooled, img_ids, txt_ids = batch()
    sigma = torch.full((2,), 0.5, dtype=torch.bfloat16)
    plain, quantized = tiny_flux(), tiny_flux()
    quantize_frozen(quantized, scheme)
    with torch.no_grad():
        a = predict(plain, x0, sigma, txt, pooled, img_ids, txt_ids)
        b = predict(quantized, x0, sigma, txt, pooled, img_ids, txt_ids)
    assert 0 < rel_err(a, b) < most


@pytest.mark.parametrize("scheme, most", [("int8", 0.03), ("fp8", 0.1)])
def test_quantized_t5_shrinks_and_encodes_close(scheme, most):
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    plain, quantized = tiny_t5(), tiny_t5()
    report = quantize_frozen(quantized, scheme)
    assert report.layers == 12 and report.after.total < 0.75 * report.before.total
    with torch.no_grad():
        a, b = plain(ids).last_hidden_state, quantized(ids).last_hidden_state
    assert 0 < rel_err(a, b) < most


@pytest.mark.parametrize("scheme, head_dim", [("int8", 16), ("fp8", 16), ("nf4", 64)])
def test_lora_trains_on_the_quantized_transformer(scheme, head_dim):
    from peft import LoraConfig

    model = tiny_flux(head_dim)
    quantize_frozen(model, scheme)
    model.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_mlp"]))
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in adapters.values():
        p.data = p.data.float()
    frozen = {n: stored(p) for n, p in model.named_parameters() if not p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    start = {n: p.detach().clone() for n, p in adapters.items()}

    x0, txt, pooled, img_ids, txt_ids = batch()
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x0.shape, generator=g).to(x0.dtype)
    sigma = torch.rand(x0.shape[0], generator=g).to(x0.dtype)
    s = sigma[:, None, None]
    x_t, target = (1 - s) * x0 + s * noise, (noise - x0).float()
    opt = torch.optim.AdamW(adapters.values(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(predict(model, x_t, sigma, txt, pooled, img_ids, txt_ids).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    assert all(map(lambda v: v == v, losses)) and losses[-1] < 0.95 * losses[0], losses
    assert all(not torch.equal(start[n], p) for n, p in adapters.items()), "every adapter weight trained"
    base = model.transformer_blocks[0].attn.to_q.base_layer.weight
    assert type(base).__name__ == {"int8": "Int8Tensor", "fp8": "Float8Tensor", "nf4": "NF4Tensor"}[scheme]
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert all(map(torch.equal, stored(p), frozen[n])), f"{n} changed"


@pytest.mark.parametrize("scheme", ["int8", "fp8", "nf4"])
def test_a_training_forward_keeps_no_dequantized_copy_of_the_frozen_weights(scheme):
    layers = [torch.nn.Linear(256, 256, bias=False) for _ in range(4)]
    net = torch.nn.Sequential(*layers).to(torch.bfloat16).requires_grad_(False)
    quantize_frozen(net, scheme)
    saved = []
    x = torch.randn(8, 256, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = net(x)
    assert not [t for t in saved if type(t) is torch.Tensor and t.shape == (256, 256)], "a bf16 weight copy was saved"
    y.float().square().sum().backward()
    # the input's gradient is the one the dequantized weights give
    plain = torch.nn.Sequential(*[torch.nn.Linear(256, 256, bias=False) for _ in range(4)]).to(torch.bfloat16)
    for p, q in zip(plain, net):
        p.weight.data = (q.weight.get_original_weight() if scheme == "nf4" else q.weight.dequantize()).detach()
    x2 = x.detach().clone().requires_grad_()
    plain(x2).float().square().sum().backward()
    assert rel_err(x2.grad, x.grad) < 1e-2


def test_the_flux_lora_setup_trains_on_the_tiny_flux_with_quantized_transformer_and_t5(runner):
    """The family's own path: build_tiny, quantize the frozen transformer and T5 (as flux.load_model's
    quantize param does), flux.lora_setup, FluxModel.predict on T5 sequences from the quantized T5."""
    from peft.utils import get_peft_model_state_dict

    from nodes.flux.build import build_tiny
    from nodes.flux.encode import t5_sequence, tokenize_both
    from nodes.flux.lora import LoraSetup

    model = build_tiny(seed=0)
    reports = [quantize_frozen(model.transformer, "int8"), quantize_frozen(model.text_encoder_2, "int8")]
    assert all(r.layers and r.after.total < 0.75 * r.before.total for r in reports)
    model = runner.run(LoraSetup, "lora", {"model": model}, rank=4, alpha=4.0, targets="attn-mlp")["adapted"]
    trained = dict(model.named_trainable_parameters())
    assert trained and all(".lora_" in n for n in trained)

    g = torch.Generator().manual_seed(0)
    _, ids_2 = tokenize_both(model.tokenizer, model.tokenizer_2, ["a red circle", "a blue square"], 16)
    with torch.no_grad():
        batch = {"t5_embedding": t5_sequence(model.text_encoder_2, ids_2),
                 "pooled_embedding": torch.randn(2, model.transformer.config.pooled_projection_dim, generator=g)}
    x0 = torch.randn(2, 16, 8, 8, generator=g)
    noise, sigma = torch.randn(x0.shape, generator=g), torch.rand(2, generator=g)
    s = sigma[:, None, None, None]
    x_t, target = (1 - s) * x0 + s * noise, noise - x0
    opt = torch.optim.AdamW(trained.values(), lr=1e-2)
    model.transformer.train()
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(model.predict(x_t, sigma, batch).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses
    assert type(model.transformer.transformer_blocks[0].attn.to_q.base_layer.weight).__name__ == "Int8Tensor"
    # the adapters' names (what the savers write) are those of a LoRA on the unquantized model
    plain = runner.run(LoraSetup, "plain", {"model": build_tiny(seed=0)}, rank=4, alpha=4.0, targets="attn-mlp")
    assert get_peft_model_state_dict(model.transformer).keys() == \
        get_peft_model_state_dict(plain["adapted"].transformer).keys()


def test_none_changes_nothing_and_needs_no_torchao(monkeypatch):
    model = tiny_flux()
    monkeypatch.setitem(sys.modules, "torchao", None)
    report = quantize_frozen(model, "none")
    assert report.layers == 0 and report.after == report.before and report.after.quantized == 0
    assert type(model.transformer_blocks[0].attn.to_q.weight) is torch.nn.Parameter


def test_a_missing_torchao_is_one_line_naming_it_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now fails as if not installed
    message = missing_package("int8")
    assert message and "torchao" in message and 'pip install "nodetrainer[quant]"' in message
    model = tiny_flux()
    with pytest.raises(ImportError) as e:
        quantize_frozen(model, "nf4")
    assert str(e.value) == missing_package("nf4") and "'nf4'" in str(e.value) and "\n" not in str(e.value)
    assert type(model.transformer_blocks[0].attn.to_q.weight) is torch.nn.Parameter, "left as it was"


def test_an_unknown_scheme_is_one_line_naming_it_and_the_choices():
    model = tiny_flux()
    with pytest.raises(ValueError, match=r"unknown scheme 'int4'; choose one of none, int8, fp8, nf4$"):
        quantize_frozen(model, "int4")


def test_a_device_torchao_cannot_run_on_is_one_line_naming_scheme_and_device():
    with pytest.raises(ValueError, match=r"quantize 'fp8' is not supported on the mps device"):
        check_scheme("fp8", "mps:0")
    with torch.device("meta"):
        module = torch.nn.Linear(64, 64)
    with pytest.raises(ValueError, match=r"quantize 'int8' is not supported on the meta device"):
        quantize_frozen(module, "int8")
    check_scheme("int8", torch.device("cpu"))
    check_scheme("none", "mps")


def test_quantizing_after_the_adapters_is_refused():
    from peft import LoraConfig

    model = tiny_flux()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"]))
    with pytest.raises(ValueError, match="already has LoRA adapters; quantize the frozen weights first"):
        quantize_frozen(model, "int8", name="transformer")
    assert not any(type(p).__name__ == "Int8Tensor" for p in model.parameters())


def test_weight_bytes_counts_a_shared_weight_once():
    a = torch.nn.Linear(64, 64, bias=False)
    b = torch.nn.Linear(64, 64, bias=False)
    b.weight = a.weight
    assert weight_bytes(torch.nn.Sequential(a, b)).total == 64 * 64 * 4


def test_the_summary_goes_to_the_log():
    class Ctx:
        lines: list = []

        def log(self, message):
            self.lines.append(message)

    ctx, model = Ctx(), tiny_flux()
    n = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    quantize_frozen(model, "int8", ctx, name="transformer")
    [line] = ctx.lines
    assert line == (f"transformer: {n} linear layers quantized to int8 weight-only (torchao); "
                    "weights 0.16 MiB -> 0.09 MiB")


def test_the_benchmark_reports_quantized_against_bf16(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quantize.py"
    spec = importlib.util.spec_from_file_location("bench_quantize", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
        assert bench.main(["--skip-real", "--schemes", "int8"]) == 0
    finally:
        sys.modules.pop(spec.name, None)
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("tiny")}
    assert set(rows) == {"bf16", "int8"} and rows["bf16"][5] == "1.00"
    assert 0.5 < float(rows["int8"][5]) < 0.75  # weight bytes against bf16's


def test_the_loaders_quantize_param_salts_only_t5s_cache_fingerprint(runner):
    """Cached T5 sequences are recomputed after a quantization change; cached latents and CLIP outputs are kept."""
    from nodes.flux.loaders import TinyModel

    plain = runner.run(TinyModel, "plain", {}, quantize="none")
    int8 = runner.run(TinyModel, "int8", {}, quantize="int8")
    assert int8["model"].quantize == "int8" and plain["model"].quantize == "none"
    assert int8["text_encoder_2"].fingerprint != plain["text_encoder_2"].fingerprint
    assert int8["text_encoder"].fingerprint == plain["text_encoder"].fingerprint
    assert int8["vae"].fingerprint == plain["vae"].fingerprint
    assert any("T5:" in e["message"] and "int8" in e["message"] for e in runner.events("log", "int8"))
