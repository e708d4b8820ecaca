"""Full-model and embedding savers, read back by diffusers' own loaders; the saver pattern; atomic saves."""

from __future__ import annotations

import errno

import pytest
import torch
from safetensors import safe_open

from nodes.sd.savers import SaveCheckpoint, SaveDiffusers, SaveEmbedding, SaveLora
from nodes.train.artifacts import ModelSaver


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x.to(unet.dtype), torch.tensor([500]), encoder_hidden_states=cond.to(unet.dtype)).sample.float()


def te_out(text_encoder, tokenizer, text="a red circle on a blue background"):
    from nodes.sd.text import encode_tokens, tokenize

    with torch.no_grad():
        return encode_tokens(text_encoder, tokenize(tokenizer, [text])).float()


def load_pipeline(path, **kw):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(path), safety_checker=None, local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_single_file(path, config):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)


# -- diffusers folder ---------------------------------------------------------------------

def test_diffusers_folder_has_the_lora_fused_and_the_live_model_keeps_its_adapters(trained, runner):
    model, _, _ = trained
    before = {name: snapshot(getattr(model, name)) for name in ("unet", "text_encoder")}
    out = runner.run(SaveDiffusers, "full", {"model": model}, name="fused", dtype="float32")
    assert isinstance(out["saver"], ModelSaver)
    folder = runner.workspace / "models" / "fused"
    [event] = runner.events("saved", "full")
    assert event["path"] == str(folder) and event["format"] == "diffusers" and event["lora_fused"]
    assert event["dtype"] == "float32" and event["steps"] == 4
    assert leftovers(folder.parent) == []

    # the live model is untouched: same tensors, adapters still separate and unmerged
    assert all(same(before[n], snapshot(getattr(model, n))) for n in before)
    q = model.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert q.merged_adapters == [] and "default" in q.lora_A

    pipe = load_pipeline(folder)
    assert not any(".lora" in k or "base_layer" in k for k in pipe.unet.state_dict())
    # what the fused weights compute is what the model with adapters computes
    torch.testing.assert_close(unet_out(pipe.unet), unet_out(model.unet), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(te_out(pipe.text_encoder, pipe.tokenizer), te_out(model.text_encoder, model.tokenizer),
                               atol=1e-5, rtol=1e-4)
    assert same(snapshot(pipe.vae), snapshot(model.vae))
    assert pipe.scheduler.config.prediction_type == model.prediction_type
    # and it differs from the base: the trained LoRA is in there
    from nodes.sd.build import build_tiny

    assert (unet_out(pipe.unet) - unet_out(build_tiny(seed=0).unet)).abs().max() > 1e-4


def test_diffusers_folder_text_encoder_has_the_keys_every_loader_expects(trained, runner, tiny_folder):
    """transformers 4.x and ComfyUI read CLIP weights under ``text_model.``; transformers 5 too."""
    from transformers import CLIPTextModel

    from nodes.lora_fusion import plain_state_dict

    model, _, _ = trained
    runner.run(SaveDiffusers, "full", {"model": model}, name="clip", dtype="float32")
    for folder in (runner.workspace / "models" / "clip", tiny_folder):  # sd.save_diffusers and build's writer
        tensors, _ = read(folder / "text_encoder" / "model.safetensors")
        assert tensors and all(k.startswith("text_model.") for k in tensors), sorted(tensors)[:3]
        loaded, info = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        if folder.name == "clip":  # the trained (LoRA-fused) weights, under the installed names
            assert same(snapshot(loaded), plain_state_dict(model.text_encoder))


def test_diffusers_folder_in_half_precision(trained, runner):
    model, _, _ = trained
    runner.run(SaveDiffusers, "half", {"model": model}, name="half", dtype="float16")
    folder = runner.workspace / "models" / "half"
    tensors, meta = read(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in tensors.values()} == {torch.float16}
    assert meta["nodetrainer_dtype"] == "float16" and meta["nodetrainer_steps"] == "4"
    pipe = load_pipeline(folder, dtype=torch.float32)
    torch.testing.assert_close(unet_out(pipe.unet), unet_out(model.unet), atol=5e-3, rtol=5e-3)


# -- single-file checkpoint -----------------------------------------------------------------

def test_sd1_checkpoint_loads_with_from_single_file(trained, runner, tiny_folder):
    """The config folder is the untrained base: equal weights after loading come from the file."""
    from nodes.sd.build import load_sd
    from nodes.lora_fusion import plain_state_dict

    model, _, _ = trained
    runner.run(SaveCheckpoint, "ckpt", {"model": model}, name="sd1", dtype="float32")
    path = runner.workspace / "models" / "sd1.safetensors"
    tensors, meta = read(path)
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in tensors
    assert "model.diffusion_model.input_blocks.1.0.in_layers.0.weight" in tensors
    assert meta["modelspec.architecture"] == "stable-diffusion-v1" and "nodetrainer_lora_fused" in meta

    pipe = load_single_file(path, tiny_folder)
    for name in ("unet", "vae", "text_encoder"):
        assert same(snapshot(getattr(pipe, name)), plain_state_dict(getattr(model, name))), name
    torch.testing.assert_close(unet_out(pipe.unet), unet_out(model.unet), atol=1e-5, rtol=1e-4)
    ours = load_sd(path, config=tiny_folder)  # sd.load_model reads it too
    assert same(snapshot(ours.unet), snapshot(pipe.unet))


def test_checkpoint_dtype_defaults_to_float16(trained, runner, tiny_folder):
    model, _, _ = trained
    runner.run(SaveCheckpoint, "ckpt16", {"model": model}, name="half")
    path = runner.workspace / "models" / "half.safetensors"
    tensors, _ = read(path)
    assert {v.dtype for v in tensors.values()} == {torch.float16}
    assert [e["dtype"] for e in runner.events("saved", "ckpt16")] == ["float16"]
    pipe = load_single_file(path, tiny_folder)
    torch.testing.assert_close(unet_out(pipe.unet.float()), unet_out(model.unet), atol=5e-3, rtol=5e-3)


def test_sd2_checkpoint_has_the_openclip_text_encoder_and_loads(runner, tmp_path):
    from nodes.sd.build import build_tiny, save_diffusers

    model = build_tiny(seed=0, version="sd2", prediction_type="v_prediction")
    config = save_diffusers(build_tiny(seed=1, version="sd2", prediction_type="v_prediction"), tmp_path / "sd2")
    runner.run(SaveCheckpoint, "ckpt", {"model": model}, name="sd2", dtype="float32")
    path = runner.workspace / "models" / "sd2.safetensors"
    tensors, meta = read(path)
    assert not any(k.startswith("cond_stage_model.transformer.") for k in tensors)
    assert tensors["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"].shape == (96, 32)
    assert "cond_stage_model.model.positional_embedding" in tensors and "cond_stage_model.model.ln_final.bias" in tensors
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v"

    pipe = load_single_file(path, config)
    for name in ("unet", "vae", "text_encoder"):
        assert same(snapshot(getattr(pipe, name)), snapshot(getattr(model, name))), name
    assert pipe.scheduler.config.prediction_type == "v_prediction"


# -- embedding ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Tiny model + a 2-vector embedding '<shape>' trained 3 steps; ``(model, runner)``."""
    from nodes.sd.build import build_tiny
    from nodes.sd.embedding import EmbeddingSetup
    from nodes.sd.text import tokenize
    from nodes.train.loop import TrainLoop
    from tests.sd.conftest import TokenBatches
    from tests.train.helpers import NodeRunner, train_inputs

    runner = NodeRunner(tmp_path_factory.mktemp("embedded"))
    adapted = runner.run(EmbeddingSetup, "emb", {"model": build_tiny(seed=0)}, placeholder="<shape>", vectors=2,
                         initial_text="red circle")["adapted"]
    batches = TokenBatches(adapted)
    batches.tokens = tokenize(adapted.tokenizer, [f"a photo of <shape> number {i}" for i in range(4)])
    trained = runner.run(TrainLoop, "train", train_inputs(adapted, batches, lr=0.05), max_steps=3,
                         device="cpu")["trained"]
    return trained, runner


def test_embedding_file_is_a1111_and_diffusers_loads_it(embedded, tiny_folder):
    from nodes.sd.text import encode_tokens, tokenize

    model, runner = embedded
    runner.run(SaveEmbedding, "save_emb", {"model": model})
    path = runner.workspace / "embeddings" / "shape.safetensors"  # named after the placeholder
    tensors, meta = read(path)
    vectors = model.embedding_vectors().detach()
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (2, 32)
    assert torch.equal(tensors["emb_params"], vectors)
    assert meta["nodetrainer_placeholder"] == "<shape>" and meta["nodetrainer_steps"] == "3"
    [event] = runner.events("saved", "save_emb")
    assert event["format"] == "a1111_embedding" and event["vectors"] == 2

    pipe = load_pipeline(tiny_folder)
    pipe.load_textual_inversion(str(path), token="<shape>")
    ids = pipe.tokenizer.convert_tokens_to_ids(["<shape>", "<shape>_1"])
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors)
    # the same prompt gives the same conditioning in diffusers and in our model (same expansion, same ids)
    prompt = "a photo of <shape> on blue"
    theirs = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    with torch.no_grad():
        ours = encode_tokens(model.text_encoder, tokenize(model.tokenizer, [prompt]))
    torch.testing.assert_close(theirs, ours)


def test_diffusers_folder_of_an_embedding_model_knows_the_placeholder(embedded):
    from nodes.sd.text import encode_tokens, tokenize

    model, runner = embedded
    runner.run(SaveDiffusers, "full", {"model": model}, name="with-embedding")
    pipe = load_pipeline(runner.workspace / "models" / "with-embedding")
    assert pipe.tokenizer.convert_tokens_to_ids(["<shape>", "<shape>_1"]) == model.embedding.token_ids
    prompt = "a <shape> on blue"
    with torch.no_grad():
        ours = encode_tokens(model.text_encoder, tokenize(model.tokenizer, [prompt]))
    torch.testing.assert_close(pipe.encode_prompt(prompt, "cpu", 1, False)[0], ours)


def test_embedding_saver_needs_an_embedding(runner):
    from nodes.sd.build import build_tiny

    with pytest.raises(ValueError, match="no trained embedding: train it through sd.embedding_setup"):
        runner.run(SaveEmbedding, "e", {"model": build_tiny()})
    with pytest.raises(ValueError, match="must be a plain file name"):
        runner.run(SaveEmbedding, "e", name="../up")


# -- the saver pattern ------------------------------------------------------------------------

def test_saver_nodes_without_a_model_only_output_their_saver(trained, runner):
    model, _, _ = trained
    savers = {cls.__name__: runner.run(cls, cls.__name__)["saver"] for cls in (SaveLora, SaveCheckpoint, SaveDiffusers)}
    assert runner.events("saved") == [] and not (runner.workspace / "lora").exists()
    ctx = runner.ctx("hook")
    paths = savers["SaveLora"].save(ctx, model, step=12)
    assert [p.name for p in paths] == ["lora-step000012.safetensors", "lora-step000012.diffusers.safetensors"]
    [folder] = savers["SaveDiffusers"].save(ctx, model, step=12)
    assert folder.name == "model-step000012" and (folder / "model_index.json").is_file()
    [ckpt] = savers["SaveCheckpoint"].save(ctx, model, step=3)
    assert ckpt.name == "model-step000003.safetensors"
    assert [e["path"] for e in runner.events("saved", "hook")] == [str(p) for p in paths + [folder, ckpt]]


# -- atomic saves ------------------------------------------------------------------------------

def failing_save_file(exc):
    """A safetensors.save_file that writes a partial file and then fails like a kill or a full disk."""
    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise exc
    return save_file


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["interrupted", "disk-full"])
def test_a_failed_checkpoint_save_keeps_the_previous_file(trained, runner, monkeypatch, exc):
    import safetensors.torch

    model, _, _ = trained
    runner.run(SaveCheckpoint, "ckpt", {"model": model}, name="keep")
    path = runner.workspace / "models" / "keep.safetensors"
    before = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file(exc))
    with pytest.raises(type(exc)) as info:
        runner.run(SaveCheckpoint, "ckpt", {"model": model}, name="keep")
    assert path.read_bytes() == before and leftovers(path.parent) == []
    if isinstance(exc, OSError):
        assert info.value.errno == errno.ENOSPC
        assert "the disk is full" in str(info.value) and str(path) in str(info.value)


def test_a_failed_folder_save_keeps_the_previous_folder(trained, runner, monkeypatch):
    import safetensors.torch

    model, _, _ = trained
    runner.run(SaveDiffusers, "full", {"model": model}, name="keep")
    folder = runner.workspace / "models" / "keep"
    files = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    unet_bytes = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    real = safetensors.torch.save_file
    calls = []

    def fail_on_the_text_encoder(tensors, filename, metadata=None):
        calls.append(filename)
        if "text_encoder" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_the_text_encoder)
    with pytest.raises(OSError, match="the disk is full: cannot write .*keep"):
        runner.run(SaveDiffusers, "full", {"model": model}, name="keep")
    assert len(calls) == 3  # unet and vae were written (to the temporary folder) before the failure
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet_bytes
    assert leftovers(folder.parent) == []
