"""sd.tiny_model, sd.load_model and sd.lora_setup."""

from __future__ import annotations

import pytest
import torch

from nodes.sd.build import build_tiny, load_sd, save_diffusers
from nodes.sd.loaders import LoadModel, TinyModel
from nodes.sd.lora import LoraSetup


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_model_is_deterministic_in_its_seed(runner):
    out = runner.run(TinyModel, "tiny", seed=3)
    again = build_tiny(seed=3)
    other = build_tiny(seed=4)
    m = out["model"]
    assert same_weights(m.unet, again.unet) and same_weights(m.text_encoder, again.text_encoder)
    assert not same_weights(m.unet, other.unet)
    # the parts the data graph uses carry stable fingerprints that follow the seed
    assert out["vae"].fingerprint == again.vae_part().fingerprint != other.vae_part().fingerprint
    assert out["vae"].module is m.vae and out["tokenizer"].tokenizer is m.tokenizer
    assert out["text_encoder"].fingerprint != out["vae"].fingerprint
    assert (m.version, m.prediction_type, m.family) == ("sd1", "epsilon", "sd")
    assert not any(p.requires_grad for part in m.parts().values() for p in part.parameters())


def test_tiny_model_has_sd_shapes_and_a_real_tokenizer():
    m = build_tiny()
    assert m.unet.config.in_channels == 4 and m.unet.config.cross_attention_dim == m.text_encoder.config.hidden_size
    ids = m.tokenizer("a red circle on a blue background").input_ids
    assert ids[0] == m.tokenizer.bos_token_id and ids[-1] == m.tokenizer.eos_token_id
    assert len(ids) == 2 + 7  # each of the 7 words is one token (the BPE learned the demo captions)
    assert m.tokenizer.decode(ids, skip_special_tokens=True) == "a red circle on a blue background"
    assert m.tokenizer.model_max_length == 77


def test_tiny_sd2_flavour_and_v_prediction():
    m = build_tiny(version="sd2", prediction_type="v_prediction")
    assert m.version == "sd2" and m.unet.config.use_linear_projection
    assert m.prediction_type == m.noise_scheduler.config.prediction_type == "v_prediction"


def test_loader_reads_a_diffusers_folder_back(runner, tiny_folder):
    out = runner.run(LoadModel, "base", path=str(tiny_folder))
    m, ref = out["model"], build_tiny(seed=0)
    assert same_weights(m.unet, ref.unet) and same_weights(m.vae, ref.vae)
    assert same_weights(m.text_encoder, ref.text_encoder)
    assert m.tokenizer("a red circle").input_ids == ref.tokenizer("a red circle").input_ids
    assert (m.version, m.prediction_type) == ("sd1", "epsilon")
    assert type(m.noise_scheduler).__name__ == "DDPMScheduler"
    again = runner.run(LoadModel, "base2", path=str(tiny_folder))
    assert again["vae"].fingerprint == out["vae"].fingerprint  # stable across loads of the same files


def test_loader_per_part_dtype_and_prediction_override(tiny_folder):
    m = load_sd(tiny_folder, dtypes={"unet": "bfloat16", "text_encoder": "float16"}, prediction_type="v_prediction")
    assert (m.unet.dtype, m.text_encoder.dtype, m.vae.dtype) == (torch.bfloat16, torch.float16, torch.float32)
    assert m.prediction_type == m.noise_scheduler.config.prediction_type == "v_prediction"
    other = load_sd(tiny_folder)
    assert other.vae_part().fingerprint != m.vae_part().fingerprint or other.dtypes != m.dtypes
    assert other.text_encoder_part().fingerprint != m.text_encoder_part().fingerprint


def test_loader_detects_sd2_and_its_v_prediction(tmp_path):
    folder = save_diffusers(build_tiny(version="sd2", prediction_type="v_prediction"), tmp_path / "sd2")
    m = load_sd(folder)
    assert (m.version, m.prediction_type) == ("sd2", "v_prediction")


def run_loader_graph(registry, tmp_path, path, extra=""):
    """Run a one-node graph through the executor: errors then carry the node id like in a real run."""
    from runtime.executor import execute
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    text = f"""format: nodetrainer.graph/1
name: loader
nodes:
  base:
    type: sd.load_model@1
    params: {{path: {path}{extra}}}
"""
    v = validate(loads_graph(text, registry), registry)  # no sink: runs a target, not the whole graph
    assert v.ok, v.problems
    return execute(v, workspace=tmp_path, targets=("base",))


def test_loader_errors_name_the_node_and_the_cause(registry, tmp_path, tiny_folder):
    from safetensors.torch import save_file

    config = f", config: {tiny_folder}"  # single files need one, or validation stops them

    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    r = run_loader_graph(registry, tmp_path, not_model, config)
    assert not r.ok and "node 'base' (sd.load_model)" in str(r.error) and "not a .safetensors file" in str(r.error)

    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    r = run_loader_graph(registry, tmp_path, garbage, config)
    assert "node 'base'" in str(r.error) and "is not a safetensors checkpoint" in str(r.error)

    lora_like = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora_like))
    r = run_loader_graph(registry, tmp_path, lora_like, config)
    assert "not a Stable Diffusion checkpoint" in str(r.error) and "LoRA" in str(r.error)

    folder = tmp_path / "empty_model"
    folder.mkdir()
    with pytest.raises(ValueError, match="not a diffusers Stable Diffusion folder: it has no unet"):
        load_sd(folder)
    # and a graph does not get that far: validation names the param
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    text = f"format: nodetrainer.graph/1\nname: x\nnodes:\n  base:\n    type: sd.load_model@1\n" \
           f"    params: {{path: {folder}}}\n"
    [problem] = [p for p in validate(loads_graph(text, registry), registry).problems if p.node == "base"]
    assert problem.field == "param 'path'" and "not a diffusers Stable Diffusion folder" in problem.message


def test_missing_path_is_caught_before_the_run(registry):
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    text = "format: nodetrainer.graph/1\nname: x\nnodes:\n  base:\n    type: sd.load_model@1\n" \
           "    params: {path: /no/such/model.safetensors}\n"
    v = validate(loads_graph(text, registry), registry, for_run=True)
    assert ("base", "param 'path'", "not_found") in [(p.node, p.field, p.code) for p in v.errors]


def test_single_file_checkpoint_loads_with_a_local_config(tmp_path, tiny_folder):
    from tests.sd.ldm_export import export_single_file

    ckpt = export_single_file(build_tiny(seed=0), tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="set 'config' to a local diffusers folder"):
        load_sd(ckpt)
    m = load_sd(ckpt, config=tiny_folder)
    ref = build_tiny(seed=0)
    assert same_weights(m.unet, ref.unet) and same_weights(m.vae, ref.vae)
    assert same_weights(m.text_encoder, ref.text_encoder)


# -- LoRA setup ----------------------------------------------------------------------

def lora_names(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_lora_setup_makes_only_adapters_trainable(runner):
    m = build_tiny()
    out = runner.run(LoraSetup, "lora", {"model": m}, rank=4, alpha=8.0, dropout=0.1)["adapted"]
    trainable = dict(out.named_trainable_parameters())
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(n.startswith("unet.") for n in trainable)  # text encoder untouched unless asked
    assert out.lora.rank == 4 and out.lora.alpha == 8.0 and not out.train_text_encoder
    q = out.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert q.r["default"] == 4 and q.scaling["default"] == 2.0 and q.lora_dropout["default"].p == 0.1
    assert torch.count_nonzero(q.lora_B["default"].weight) == 0  # default init: starts as a no-op


def test_lora_target_presets_and_regex(runner):
    counts = {}
    for preset in ("attn", "attn-mlp", "all-linear"):
        out = runner.run(LoraSetup, preset, {"model": build_tiny()}, targets=preset)["adapted"]
        counts[preset] = len(lora_names(out.unet))
    assert 0 < counts["attn"] < counts["attn-mlp"] <= counts["all-linear"]
    out = runner.run(LoraSetup, "rx", {"model": build_tiny()}, target_regex=r".*attn2\.to_(k|v)")["adapted"]
    names = lora_names(out.unet)
    assert names and all("attn2.to_k" in n or "attn2.to_v" in n for n in names)
    assert out.lora.targets == r".*attn2\.to_(k|v)"


def test_lora_on_the_text_encoder_on_request(runner):
    out = runner.run(LoraSetup, "lora", {"model": build_tiny()}, train_text_encoder=True, clip_skip=1,
                     init="gaussian")["adapted"]
    te = lora_names(out.text_encoder)
    assert te and all("lora_" in n for n in te)
    assert out.train_text_encoder and out.clip_skip == 1 and out.lora.text_encoder
    q = out.text_encoder.encoder.layers[0].self_attn.q_proj
    assert torch.count_nonzero(q.lora_B["default"].weight) == 0  # gaussian init also starts as a no-op


def test_lora_setup_errors(runner):
    with pytest.raises(ValueError, match="not a valid regular expression"):
        runner.run(LoraSetup, "a", {"model": build_tiny()}, target_regex="(")
    with pytest.raises(ValueError, match="no layer of the unet matches target_regex"):
        runner.run(LoraSetup, "b", {"model": build_tiny()}, target_regex="nothing_like_this")
    once = runner.run(LoraSetup, "c", {"model": build_tiny()})["adapted"]
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        runner.run(LoraSetup, "d", {"model": once})
