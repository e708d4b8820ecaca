"""sdxl.load_model: diffusers folders and single files load what was saved, offline; bad input is one clear line."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny SDXL (seed 0) as a diffusers folder (the pipeline's own save_pretrained) and as a single file."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    from nodes.ldm_layout import sdxl_state_dict
    from nodes.sdxl.build import build_tiny

    model = build_tiny(seed=0)
    root = tmp_path_factory.mktemp("sdxl")
    from diffusers import EulerDiscreteScheduler

    StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
                              tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
                              scheduler=EulerDiscreteScheduler.from_config(model.noise_scheduler.config)
                              ).save_pretrained(root / "folder")
    state = sdxl_state_dict(model.unet.state_dict(), model.unet.config, model.vae.state_dict(), model.vae.config,
                            model.text_encoder.state_dict(), model.text_encoder_2.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    return model, root


def same_weights(a, b, parts=("unet", "vae", "text_encoder", "text_encoder_2"), dtype=None):
    for part in parts:
        x, y = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert set(x) == set(y) and all(torch.equal(x[k].to(dtype or x[k].dtype), y[k]) for k in x), part


def test_folder_and_single_file_load_the_saved_weights(saved, runner):
    from nodes.sdxl.build import TINY_DIR
    from nodes.sdxl.loaders import LoadModel

    model, root = saved
    from_folder = runner.run(LoadModel, path=str(root / "folder"))
    same_weights(model, from_folder["model"])
    from_file = runner.run(LoadModel, path=str(root / "model.safetensors"), config=str(TINY_DIR), vae_dtype="bfloat16")
    loaded = from_file["model"]
    assert loaded.vae.dtype == torch.bfloat16 and loaded.unet.dtype == torch.float32
    same_weights(model, loaded, ("unet", "text_encoder", "text_encoder_2"))
    same_weights(model, loaded, ("vae",), dtype=torch.bfloat16)
    assert loaded.prediction_type == "epsilon" and from_file["text_encoder_2"].module is loaded.text_encoder_2


def test_v_prediction_with_zero_terminal_snr(saved, runner):
    from nodes.sdxl.loaders import LoadModel

    _, root = saved
    model = runner.run(LoadModel, path=str(root / "folder"), prediction_type="v_prediction",
                       zero_terminal_snr=True)["model"]
    assert model.prediction_type == "v_prediction"
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    assert float(model.noise_scheduler.alphas_cumprod[-1]) < 1e-6  # the last step is pure noise


def test_bad_inputs_are_one_clear_line(saved, runner, tmp_path):
    import shutil

    from nodes.sdxl.loaders import LoadModel

    _, root = saved
    with pytest.raises(ValueError, match="single-file checkpoint: set 'config'"):
        runner.run(LoadModel, path=str(root / "model.safetensors"))
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="only safetensors checkpoints are loaded"):
        runner.run(LoadModel, path=str(pickled))
    partial = tmp_path / "partial"
    shutil.copytree(root / "folder", partial, ignore=shutil.ignore_patterns("text_encoder_2"))
    with pytest.raises(ValueError, match="not a diffusers SDXL folder: it has no text_encoder_2"):
        runner.run(LoadModel, path=str(partial))
    from safetensors.torch import save_file

    sd1 = tmp_path / "sd1.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(1), "cond_stage_model.y": torch.zeros(1)}, str(sd1))
    with pytest.raises(ValueError, match="not an SDXL checkpoint.*sd.load_model"):
        runner.run(LoadModel, path=str(sd1), config=str(root / "folder"))


def test_validation_says_what_a_single_file_or_folder_lacks(saved, tmp_path):
    import shutil

    from runtime.graph_file import loads_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    _, root = saved
    partial = tmp_path / "partial"
    shutil.copytree(root / "folder", partial, ignore=shutil.ignore_patterns("tokenizer_2"))
    text = ("format: nodetrainer.graph/1\nname: t\nnodes:\n"
            f"  file:\n    type: sdxl.load_model@1\n    params: {{path: '{root / 'model.safetensors'}'}}\n"
            f"  folder:\n    type: sdxl.load_model@1\n    params: {{path: '{partial}'}}\n")
    (tmp_path / "g.yaml").write_text(text)
    reg = default_registry()
    problems = validate(loads_graph(text, reg, path=tmp_path / "g.yaml"), reg, for_run=True).errors
    said = {(p.node, p.field): p.message for p in problems}
    assert "set 'config'" in said[("file", "param 'config'")]
    assert "no tokenizer_2 sub-folder" in said[("folder", "param 'path'")]
