"""Flux LoRA and fine-tune setups: which layers the presets and block ranges pick, what trains."""

from __future__ import annotations

import pytest
import torch

from nodes.flux.finetune import FinetuneSetup
from nodes.flux.lora import LoraSetup
from nodes.flux.lora_targets import parse_blocks, select_targets

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def wide():
    """A tiny transformer with 3 double and 3 single blocks, for block ranges."""
    from diffusers import FluxTransformer2DModel

    from nodes.flux.build import tiny_config

    config = {**tiny_config("transformer"), "num_layers": 3, "num_single_layers": 3}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FluxTransformer2DModel.from_config(config)


def leaves(names, block):
    """The layer paths below ``block``.N. of ``names``."""
    out = set()
    for n in names:
        head, _, rest = n.partition(".")
        if head == block:
            out.add(rest.partition(".")[2])
    return out


def block_indices(names, block):
    return {int(n.split(".")[1]) for n in names if n.split(".")[0] == block}


ATTN_DOUBLE = {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
               "attn.add_v_proj", "attn.to_add_out"}


def test_presets_pick_attention_then_mlps_then_every_block_linear_never_the_final_proj_out(wide):
    attn = select_targets(wide, "attn", None)
    assert leaves(attn, "transformer_blocks") == ATTN_DOUBLE
    assert leaves(attn, "single_transformer_blocks") == {"attn.to_q", "attn.to_k", "attn.to_v"}
    mlp = select_targets(wide, "attn-mlp", None)
    assert leaves(mlp, "transformer_blocks") == ATTN_DOUBLE | {
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"}  # the text MLP too (trap 13)
    assert leaves(mlp, "single_transformer_blocks") == {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"}
    every = select_targets(wide, "all-linear", None)
    in_blocks = [n for n, m in wide.named_modules() if isinstance(m, torch.nn.Linear) and "blocks." in n]
    assert sorted(every) == sorted(in_blocks)
    assert {"norm1.linear", "norm1_context.linear"} <= leaves(every, "transformer_blocks")
    for names in (attn, mlp, every):  # peft's suffix "proj_out" would also take the output layer (trap 12)
        assert "proj_out" not in names and all("blocks." in n for n in names)
        assert block_indices(names, "transformer_blocks") == {0, 1, 2}


def test_block_ranges_and_regex(wide):
    some = select_targets(wide, "attn-mlp", None, double_blocks="0,2", single_blocks="1-2")
    assert block_indices(some, "transformer_blocks") == {0, 2}
    assert block_indices(some, "single_transformer_blocks") == {1, 2}
    only_single = select_targets(wide, "attn", None, double_blocks="none")
    assert block_indices(only_single, "transformer_blocks") == set() and only_single
    assert select_targets(wide, "attn", r".*\.ff_context\..*", double_blocks="1") == [
        "transformer_blocks.1.ff_context.net.0.proj", "transformer_blocks.1.ff_context.net.2"]
    assert select_targets(wide, "attn", "proj_out|x_embedder") == ["x_embedder", "proj_out"]  # outside: by regex only
    with pytest.raises(ValueError, match="param 'single_blocks': block 3 does not exist .* 3 of them: 0-2"):
        select_targets(wide, "attn", None, single_blocks="1-3")
    with pytest.raises(ValueError, match="param 'double_blocks': 'x' is not a block index"):
        parse_blocks("0,x", 19, "double_blocks")
    assert parse_blocks(" 0-2, 5 ", 19, "double_blocks") == {0, 1, 2, 5} and parse_blocks("", 4, "p") == {0, 1, 2, 3}


def build():
    from nodes.flux.build import build_tiny

    return build_tiny(seed=0)


def test_lora_setup_adapts_only_the_chosen_layers_and_only_adapters_train(runner):
    adapted = runner.run(LoraSetup, "lora", {"model": build()}, rank=4, alpha=8.0, targets="attn-mlp",
                         single_blocks="none")["adapted"]
    assert adapted.lora.parts == ("transformer",) and not adapted.train_text_encoder
    assert "single blocks none" in adapted.lora.targets
    trained = dict(adapted.named_trainable_parameters())
    assert trained and all(".lora_" in n and n.startswith("transformer.transformer_blocks.") for n in trained)
    assert all(p.dtype == torch.float32 for p in trained.values())
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in adapted.transformer.named_modules() if n.endswith(".lora_A")}
    assert wrapped == set(select_targets(build().transformer, "attn-mlp", None, single_blocks="none"))
    assert type(adapted.transformer.proj_out) is torch.nn.Linear  # the output layer stays plain


def test_lora_on_clip_l_trains_from_its_tokens(runner):
    from nodes.flux.encode import tokenize_both, t5_sequence

    m = runner.run(LoraSetup, "lora", {"model": build()}, rank=2, train_clip_l=True)["adapted"]
    assert m.lora.parts == ("transformer", "text_encoder") and m.train_text_encoder and m.lora.text_encoder
    assert {n.split(".", 1)[0] for n, _ in m.named_trainable_parameters()} == {"transformer", "text_encoder"}
    ids, ids_2 = tokenize_both(m.tokenizer, m.tokenizer_2, [PROMPT] * 2, 16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        t5 = t5_sequence(m.text_encoder_2, ids_2)
    for name, p in m.named_trainable_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    batch = {"tokens": ids, "t5_embedding": t5}
    m.predict(torch.randn(2, 16, 8, 8, generator=g), torch.tensor([0.3, 0.7]), batch).square().mean().backward()
    grads = {n.split(".", 1)[0] for n, p in m.named_trainable_parameters() if p.grad is not None and p.grad.abs().sum()}
    assert grads == {"transformer", "text_encoder"}
    with pytest.raises(ValueError, match="no field 'tokens'"):
        m.predict(torch.zeros(1, 16, 8, 8), torch.tensor([0.5]), {"t5_embedding": t5[:1]})


def configured(cls, **params):
    node = cls()
    for name, param in cls.__node_spec__.params.items():
        setattr(node, name, params.get(name, param.default))
    return node


def test_the_setups_ask_the_batches_for_what_they_train_on():
    assert set(configured(LoraSetup).needed_batch_fields()) == {"t5_embedding", "pooled_embedding"}
    assert set(configured(LoraSetup, train_clip_l=True).needed_batch_fields()) == {"t5_embedding", "tokens"}
    assert set(configured(FinetuneSetup).needed_batch_fields()) == {"t5_embedding", "pooled_embedding"}
    assert set(configured(FinetuneSetup, train_text_encoder=True).needed_batch_fields()) == {"t5_embedding", "tokens"}


def test_lora_setup_refuses_a_selection_of_nothing_and_a_second_lora(runner):
    with pytest.raises(ValueError, match="no layer of the transformer matches preset 'attn' in double_blocks 'none'"):
        runner.run(LoraSetup, "lora", {"model": build()}, double_blocks="none", single_blocks="none")
    with pytest.raises(ValueError, match="param 'double_blocks': block 1 does not exist"):
        runner.run(LoraSetup, "lora", {"model": build()}, double_blocks="0-1")
    adapted = runner.run(LoraSetup, "lora", {"model": build()}, rank=2)["adapted"]
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        runner.run(LoraSetup, "again", {"model": adapted})


def test_finetune_trains_the_transformer_and_clip_l_each_with_its_learning_rate(runner):
    model = runner.run(FinetuneSetup, "ft", {"model": build()}, train_text_encoder=True, transformer_lr=1e-5,
                       text_encoder_lr=1e-6)["adapted"]
    assert {g["name"]: g.get("lr") for g in model.param_groups()} == {"transformer": 1e-5, "text_encoder": 1e-6}
    assert model.train_text_encoder and model.dtypes["transformer"] == "bfloat16"
    assert all(p.requires_grad and p.dtype == torch.bfloat16 for p in model.transformer.parameters())
    assert not any(p.requires_grad for p in (*model.vae.parameters(), *model.text_encoder_2.parameters()))
    with pytest.raises(ValueError, match="both off: nothing would train"):
        runner.run(FinetuneSetup, "ft", {"model": build()}, train_transformer=False)


def test_setups_refuse_another_familys_model(runner):
    from tests.train.helpers import make_toy

    for cls, name in ((LoraSetup, "flux.lora_setup"), (FinetuneSetup, "flux.finetune_setup")):
        with pytest.raises(TypeError, match=f"{name} needs a FLUX.1 model, got a 'toy' model"):
            runner.run(cls, "setup", {"model": make_toy()})
