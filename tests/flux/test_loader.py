"""flux.load_model: diffusers folders and single-file transformers (BFL or diffusers layout) with a config folder
load what was saved, offline, with per-part dtypes and dev/schnell read from the weights; bad input is one line."""

from __future__ import annotations

import pytest
import torch

PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")
FLOAT32 = {f"{p}_dtype": "float32" for p in PARTS}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny Flux dev (seed 0) as a diffusers folder (our save_diffusers), its transformer as BFL single files
    (with and without ComfyUI's prefix) and as a diffusers-layout file, and tiny schnell's as a BFL file."""
    from safetensors.torch import save_file

    from nodes.flux.bfl_layout import PREFIX, diffusers_to_bfl
    from nodes.flux.build import build_tiny, save_diffusers

    model, schnell = build_tiny(seed=0, variant="dev"), build_tiny(seed=0, variant="schnell")
    root = tmp_path_factory.mktemp("flux")
    save_diffusers(model, root / "folder")
    sd = model.transformer.state_dict()
    save_file(diffusers_to_bfl(sd), str(root / "flux1-tiny.safetensors"))
    vae_keys = {f"vae.{k}": v.contiguous() for k, v in list(model.vae.state_dict().items())[:3]}
    save_file({**diffusers_to_bfl(sd, PREFIX), **vae_keys}, str(root / "comfy.safetensors"))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(root / "diffusers-layout.safetensors"))
    save_file(diffusers_to_bfl(schnell.transformer.state_dict()), str(root / "schnell.safetensors"))
    return model, schnell, root


def same_weights(a, b, parts=PARTS, dtype=None):
    for part in parts:
        x, y = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert set(x) == set(y) and all(torch.equal(x[k].to(dtype or x[k].dtype), y[k]) for k in x), part


def test_a_saved_diffusers_folder_loads_back_equal_and_flux_pipeline_reads_it(saved, runner):
    from diffusers import FluxPipeline

    from nodes.flux.loaders import LoadModel

    model, _, root = saved
    out = runner.run(LoadModel, path=str(root / "folder"), guidance=3.5, **FLOAT32)
    loaded = out["model"]
    same_weights(model, loaded)
    assert loaded.variant == "dev" and loaded.guidance == 3.5 and loaded.version == "flux1-dev"
    config = {k: v for k, v in model.noise_scheduler.config.items() if not k.startswith("_")}
    assert {k: loaded.noise_scheduler.config[k] for k in config} == config
    text = "a red circle"
    assert loaded.tokenizer_2(text).input_ids == model.tokenizer_2(text).input_ids
    assert loaded.tokenizer(text).input_ids == model.tokenizer(text).input_ids
    assert out["text_encoder_2"].module is loaded.text_encoder_2 and out["vae"].shift_factor == 0.1159
    pipe = FluxPipeline.from_pretrained(root / "folder", local_files_only=True)  # diffusers' own loader
    same_weights(model, pipe)


@pytest.mark.parametrize("name", ["flux1-tiny.safetensors", "comfy.safetensors", "diffusers-layout.safetensors"])
def test_a_single_file_transformer_with_a_config_folder_loads_equal_in_its_dtypes(saved, runner, name):
    from nodes.flux.loaders import LoadModel

    model, _, root = saved
    loaded = runner.run(LoadModel, path=str(root / name), config=str(root / "folder"),
                        **{**FLOAT32, "transformer_dtype": "bfloat16"})["model"]
    assert loaded.transformer.dtype == torch.bfloat16 and loaded.vae.dtype == torch.float32
    assert loaded.text_encoder_2.dtype == torch.float32 and loaded.variant == "dev"
    same_weights(model, loaded, ("transformer",), dtype=torch.bfloat16)
    same_weights(model, loaded, ("vae", "text_encoder", "text_encoder_2"))


def test_schnell_is_read_from_the_weights_and_predicts_without_guidance(saved, runner):
    from nodes.flux.loaders import LoadModel

    _, schnell, root = saved
    loaded = runner.run(LoadModel, path=str(root / "schnell.safetensors"), config=str(root / "folder"),
                        **FLOAT32)["model"]
    assert loaded.variant == "schnell" and not loaded.guidance_embeds
    same_weights(schnell, loaded, ("transformer",))
    batch = {"t5_embedding": torch.zeros(1, 4, 48), "pooled_embedding": torch.zeros(1, 32)}
    with torch.no_grad():
        out = loaded.predict(torch.zeros(1, 16, 2, 2), torch.tensor([0.5]), batch)
    assert out.shape == (1, 16, 2, 2)


def test_the_dtype_params_reach_a_folder_load(saved, runner):
    from nodes.flux.loaders import LoadModel

    _, _, root = saved
    loaded = runner.run(LoadModel, path=str(root / "folder"))["model"]  # defaults: bf16, VAE float32
    assert loaded.transformer.dtype == loaded.text_encoder.dtype == loaded.text_encoder_2.dtype == torch.bfloat16
    assert loaded.vae.dtype == torch.float32 and loaded.dtypes["transformer"] == "bfloat16"


def test_bad_inputs_are_one_clear_line(saved, runner, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from nodes.flux.bfl_layout import diffusers_to_bfl
    from nodes.flux.build import TINY_DIR
    from nodes.flux.loaders import LoadModel

    model, _, root = saved
    with pytest.raises(ValueError, match="single-file transformer: set 'config'"):
        runner.run(LoadModel, path=str(root / "flux1-tiny.safetensors"))
    pickled = tmp_path / "flux.ckpt"
    pickled.write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="only safetensors files are loaded"):
        runner.run(LoadModel, path=str(pickled), config=str(root / "folder"))
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 64)}, str(lora))
    with pytest.raises(ValueError, match="lora.safetensors is not a FLUX.1 transformer"):
        runner.run(LoadModel, path=str(lora), config=str(root / "folder"))
    partial = tmp_path / "partial"
    shutil.copytree(root / "folder", partial, ignore=shutil.ignore_patterns("text_encoder_2"))
    with pytest.raises(ValueError, match="not a diffusers Flux folder: it has no text_encoder_2"):
        runner.run(LoadModel, path=str(partial))
    with pytest.raises(ValueError, match="config .*partial is not a diffusers Flux folder: it has no text_encoder_2"):
        runner.run(LoadModel, path=str(root / "flux1-tiny.safetensors"), config=str(partial))
    with pytest.raises(ValueError, match="cannot load the vae of .*the config folder needs the weights"):
        runner.run(LoadModel, path=str(root / "flux1-tiny.safetensors"), config=str(TINY_DIR))
    wider = tmp_path / "wider.safetensors"  # a transformer of other dims than the config's
    bfl = diffusers_to_bfl(model.transformer.state_dict())
    bfl["txt_in.weight"] = torch.zeros(32, 40)
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(wider))
    with pytest.raises(ValueError, match=r"does not match the transformer config .*context_embedder.weight: "
                                         r"file \[32, 40\], config \[32, 48\]"):
        runner.run(LoadModel, path=str(wider), config=str(root / "folder"))


def test_validation_says_what_a_single_file_or_folder_lacks(saved, tmp_path):
    import shutil

    from runtime.graph_file import loads_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    _, _, root = saved
    partial = tmp_path / "partial"
    shutil.copytree(root / "folder", partial, ignore=shutil.ignore_patterns("tokenizer_2"))
    text = ("format: nodetrainer.graph/1\nname: t\nnodes:\n"
            f"  file:\n    type: flux.load_model@1\n    params: {{path: '{root / 'flux1-tiny.safetensors'}'}}\n"
            f"  folder:\n    type: flux.load_model@1\n    params: {{path: '{partial}'}}\n")
    (tmp_path / "g.yaml").write_text(text)
    reg = default_registry()
    problems = validate(loads_graph(text, reg, path=tmp_path / "g.yaml"), reg, for_run=True).errors
    said = {(p.node, p.field): p.message for p in problems}
    assert "set 'config'" in said[("file", "param 'config'")]
    assert "no tokenizer_2 sub-folder" in said[("folder", "param 'path'")]
