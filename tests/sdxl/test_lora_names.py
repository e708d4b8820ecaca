"""SDXL's UNet module names in the original (SGM) layout kohya's sd-scripts write, and back."""

from __future__ import annotations

import pytest
import torch

from nodes.sdxl.lora_names import diffusers_module_name, kohya_module_name, sgm_module_name


@pytest.fixture(scope="module")
def tiny():
    from nodes.sdxl.build import build_tiny

    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def sdxl_shaped():
    """A UNet with real SDXL's block structure: 3 levels, 2 resnets each, attention in the lower two."""
    from diffusers import UNet2DConditionModel

    from nodes.sdxl.build import tiny_config

    config = {**tiny_config("unet"), "layers_per_block": 2, "block_out_channels": [32, 64, 64],
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
              "attention_head_dim": [2, 4, 4], "transformer_layers_per_block": [1, 1, 2]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet2DConditionModel.from_config(config)


def block_modules(unet) -> list[str]:
    return [n for n, _ in unet.named_modules() if ".attentions." in n or ".resnets." in n]


@pytest.mark.parametrize("which", ["tiny", "sdxl_shaped"])
def test_every_attention_and_resnet_module_round_trips(request, which):
    from nodes.ldm_layout import UNET_PREFIX, unet_to_ldm

    unet = request.getfixturevalue(which)
    unet = unet.unet if hasattr(unet, "unet") else unet
    names = block_modules(unet)
    assert len(names) > 50
    sgm = {n: sgm_module_name(n, unet.config) for n in names}
    assert len(set(sgm.values())) == len(names), "two modules got one name"
    assert all(s.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for s in sgm.values())
    assert all(diffusers_module_name(s, unet.config) == n for n, s in sgm.items())
    # a layer's SGM name is where the single-file checkpoint keeps its weight
    ldm = unet_to_ldm(unet.state_dict(), unet.config)
    weighted = [n for n, m in unet.named_modules() if n in sgm and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert weighted and all(f"{UNET_PREFIX}{sgm[n]}.weight" in ldm for n in weighted)


@pytest.mark.parametrize("ours, original", [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("down_blocks.2.attentions.1.proj_in", "input_blocks.8.1.proj_in"),
    ("mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj", "middle_block.1.transformer_blocks.1.ff.net.0.proj"),
    ("up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0", "output_blocks.5.1.transformer_blocks.0.attn2.to_out.0"),
    ("down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2"),
    ("down_blocks.2.resnets.0.time_emb_proj", "input_blocks.7.0.emb_layers.1"),
    ("up_blocks.0.resnets.0.conv_shortcut", "output_blocks.0.0.skip_connection"),
    ("mid_block.resnets.1.conv2", "middle_block.2.out_layers.3"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
])
def test_sdxl_names_are_the_ones_kohya_files_use(sdxl_shaped, ours, original):
    assert sgm_module_name(ours, sdxl_shaped.config) == original
    assert diffusers_module_name(original, sdxl_shaped.config) == ours


def test_diffusers_loads_our_kohya_unet_names_into_the_modules_we_named(tmp_path):
    """diffusers' own SGM -> diffusers conversion (in load_lora_weights) lands on the modules we named."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    from nodes.lora_check import adaptable_layers
    from nodes.sdxl.build import build_tiny

    model = build_tiny(seed=0)
    layers = {n: m for n, m in adaptable_layers(model.unet).items() if ".attentions." in n or ".resnets." in n}
    tensors = {}
    for name, layer in layers.items():
        key = kohya_module_name("unet", name, model.unet.config)
        assert key.startswith("lora_unet_") and "." not in key
        conv = isinstance(layer, torch.nn.Conv2d)
        down = (2, layer.in_channels, *layer.kernel_size) if conv else (2, layer.in_features)
        up = (layer.out_channels, 2, 1, 1) if conv else (layer.out_features, 2)
        tensors.update({f"{key}.lora_down.weight": torch.zeros(down), f"{key}.lora_up.weight": torch.zeros(up),
                        f"{key}.alpha": torch.tensor(2.0)})
    save_file(tensors, str(tmp_path / "k.safetensors"))
    pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
                                     tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
                                     scheduler=model.noise_scheduler)
    with torch.random.fork_rng(devices=[]):
        pipe.load_lora_weights(str(tmp_path / "k.safetensors"), adapter_name="ours")
    adapted = {n for n, m in model.unet.named_modules() if "ours" in getattr(m, "lora_A", {})}
    assert adapted == set(layers)


def test_text_encoder_names_and_mistakes(tiny):
    assert kohya_module_name("text_encoder", "encoder.layers.0.self_attn.q_proj") == \
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"  # transformers 5's CLIPTextModel has no text_model
    assert kohya_module_name("text_encoder_2", "text_model.encoder.layers.1.mlp.fc1") == \
        "lora_te2_text_model_encoder_layers_1_mlp_fc1"
    with pytest.raises(ValueError, match="SDXL has no LoRA part 'vae'"):
        kohya_module_name("vae", "encoder.conv_in")
    with pytest.raises(ValueError, match="'label_embedding.3' is not a module name of the SDXL UNet's original layout"):
        diffusers_module_name("label_embedding.3", tiny.unet.config)
    with pytest.raises(ValueError, match="has no place"):
        sgm_module_name("no_such_block.0", tiny.unet.config)


def test_the_fit_check_knows_every_name_a_file_may_use(tiny):
    from nodes.sdxl.lora_names import lora_layers

    layers = lora_layers(tiny)
    q = tiny.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    sgm = "lora_unet_" + sgm_module_name("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                                         tiny.unet.config).replace(".", "_")
    for name in (sgm, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
                 "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"):
        assert layers[name] is q, name
    te2_q = tiny.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj
    assert layers["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"] is te2_q
    assert layers["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"] is te2_q
    te1 = getattr(tiny.text_encoder, "text_model", tiny.text_encoder)  # transformers 5 has no text_model level
    te1_q = te1.encoder.layers[0].self_attn.q_proj
    assert layers["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] is te1_q
    assert layers["text_encoder.text_model.encoder.layers.0.self_attn.q_proj"] is te1_q
    assert not any(k.startswith(("lora_te_", "text_encoder.text_model.text_model")) for k in layers)
