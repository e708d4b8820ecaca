"""User mistakes with SD files fail early, in one line that names what is wrong: model folders and
checkpoints whose weights do not fit their configs, single files without a config, and sampler LoRA
files that are pickles, truncated, for another model, mis-shaped or hold NaN."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.sd.build import build_tiny, load_sd
from nodes.sd.sampler import Sample

VAE_FILE = "diffusion_pytorch_model.safetensors"


def one_line(error) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 1500, text
    assert "Traceback" not in text and "weights_only" not in text and "If you want to" not in text, text
    return text


def no_meta_tensors(model) -> bool:
    return not any(t.is_meta for part in (model.unet, model.vae, model.text_encoder)
                   for t in list(part.parameters()) + list(part.buffers()))


# -- diffusers folders whose weights do not fit their configs -----------------------------------

def edited_folder(tiny_folder, tmp_path, part: str, edit, file: str = VAE_FILE):
    folder = tmp_path / "edited"
    shutil.copytree(tiny_folder, folder)
    weights = load_file(folder / part / file)
    edit(weights)
    save_file(weights, str(folder / part / file))
    return folder


def other_vae_weights() -> dict:
    """The weights of a VAE from another config (three levels instead of two)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1)
    return vae.state_dict()


@pytest.mark.parametrize("case, edit, expected", [
    ("missing", lambda w: w.pop("decoder.conv_in.bias"), "1 missing (decoder.conv_in.bias)"),
    ("extra", lambda w: w.update({"decoder.extra.weight": torch.zeros(2)}), "1 unexpected (decoder.extra.weight)"),
    ("shape", lambda w: w.update({"decoder.conv_in.bias": torch.zeros(3)}),
     "1 of the wrong shape (decoder.conv_in.bias: file [3], config [64])"),
    ("other-config", lambda w: (w.clear(), w.update(other_vae_weights())), "of the wrong shape"),
])
def test_a_vae_folder_whose_weights_do_not_fit_fails_at_load_naming_the_keys(tiny_folder, tmp_path, case, edit,
                                                                             expected):
    folder = edited_folder(tiny_folder, tmp_path, "vae", edit)
    with pytest.raises(ValueError) as info:
        load_sd(folder)
    text = one_line(info.value)
    assert f"the vae of {folder} does not match vae/config.json" in text and expected in text
    if case == "other-config":  # every kind is listed, a bounded number each
        assert "missing" in text and "unexpected" in text and " more" in text


def test_text_encoder_and_unet_folders_are_checked_too(tiny_folder, tmp_path):
    folder = edited_folder(tiny_folder, tmp_path, "text_encoder",
                           lambda w: w.pop("text_model.final_layer_norm.bias"), file="model.safetensors")
    with pytest.raises(ValueError, match=r"the text_encoder of .* 1 missing \(final_layer_norm.bias\)"):
        load_sd(folder)
    shutil.rmtree(folder)
    folder = edited_folder(tiny_folder, tmp_path, "unet", lambda w: w.update({"conv_out.bias": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"the unet of .* \(conv_out.bias: file \[3\], config \[4\]\)"):
        load_sd(folder)


# -- single-file checkpoints -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_tensors(tmp_path_factory):
    from tests.sd.ldm_export import export_single_file

    return load_file(export_single_file(build_tiny(seed=0), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


@pytest.mark.parametrize("key, edit, expected", [
    ("model.diffusion_model.out.2.bias", "drop", "unet weights: 1 missing (model.diffusion_model.out.2.bias)"),
    ("first_stage_model.encoder.mid.attn_1.q.weight", "drop", "vae weights: 1 missing"),
    ("cond_stage_model.transformer.text_model.final_layer_norm.bias", "drop", "text_encoder weights: 1 missing"),
    ("first_stage_model.decoder.conv_in.bias", "shape",
     "vae weights: 1 of the wrong shape (first_stage_model.decoder.conv_in.bias: file [3], config [64])"),
])
def test_a_checkpoint_that_does_not_fit_its_config_fails_at_load(checkpoint_tensors, tiny_folder, tmp_path, key,
                                                                  edit, expected):
    # real checkpoints carry EMA copies and schedule buffers: extra keys are no error, and not listed
    extras = {"model_ema.decay": torch.tensor(0.999), "alphas_cumprod": torch.ones(4)}
    tensors = {**checkpoint_tensors, **extras}
    if edit == "drop":
        del tensors[key]
    else:
        tensors[key] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as info:
        load_sd(path, config=tiny_folder)
    text = one_line(info.value)
    assert text.startswith(f"bad.safetensors does not match the config {tiny_folder}") and expected in text
    assert "meta tensor" not in text and "model_ema" not in text

    tensors[key] = checkpoint_tensors[key]  # repaired, with the extras still in: it loads, fully
    save_file(tensors, str(path))
    assert no_meta_tensors(load_sd(path, config=tiny_folder))


# -- checks at validation ----------------------------------------------------------------------------

def validate_text(registry, text):
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    return validate(loads_graph(text, registry), registry, for_run=True)


def loader_graph(path, extra=""):
    return f"format: nodetrainer.graph/1\nname: x\nnodes:\n  base:\n    type: sd.load_model@1\n" \
           f"    params: {{path: {path}{extra}}}\n  sample:\n    type: sd.sample@1\n    in: {{model: base.model}}\n"


def test_a_single_file_without_config_is_an_error_at_validation(registry, checkpoint_tensors, tiny_folder, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(checkpoint_tensors, str(path))
    v = validate_text(registry, loader_graph(path))
    found = [(p.node, p.field, p.code) for p in v.errors]
    assert found == [("base", "param 'config'", "check")], v.problems
    assert "tiny.safetensors is a single-file checkpoint: set 'config'" in v.errors[0].message
    assert validate_text(registry, loader_graph(path, f", config: {tiny_folder}")).ok
    assert validate_text(registry, loader_graph(tiny_folder)).ok  # a folder needs no config


def test_a_config_folder_without_the_diffusers_parts_is_an_error_at_validation(registry, checkpoint_tensors,
                                                                               tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(checkpoint_tensors, str(path))
    (tmp_path / "cfg" / "unet").mkdir(parents=True)
    v = validate_text(registry, loader_graph(path, f", config: {tmp_path / 'cfg'}"))
    [problem] = v.errors
    assert problem.field == "param 'config'" and "has no vae, text_encoder, tokenizer, scheduler" in problem.message


def test_validate_on_the_command_line_prints_one_line_for_it(checkpoint_tensors, tmp_path):
    from tests.conftest import run_cli

    path = tmp_path / "tiny.safetensors"
    save_file(checkpoint_tensors, str(path))
    graph = tmp_path / "graph.yaml"
    graph.write_text(loader_graph(path))
    out = run_cli("validate", graph)
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "config" in line]
    assert len(lines) == 1 and "base" in lines[0] and "single-file checkpoint" in lines[0], out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


# -- sampler LoRA files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_files(trained):
    _, files, _ = trained
    return {fmt: load_file(path) for fmt, path in files.items()}


def sample_with(runner, lora, model=None, node="sample"):
    return runner.run(Sample, node, {"model": model if model is not None else build_tiny(seed=0)},
                      width=32, height=32, steps=2, device="cpu", lora=str(lora))


def first_key(tensors, part: str) -> str:
    return next(k for k in sorted(tensors) if part in k)


def test_a_pickled_lora_is_refused_without_unpickling(lora_files, runner, tmp_path, monkeypatch):
    import diffusers.utils.state_dict_utils  # noqa: F401  (loaded before torch.load is patched)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a user file")

    for name in ("pickled.safetensors", "pickled.pt"):
        path = tmp_path / name
        torch.save(lora_files["kohya"], path)
        monkeypatch.setattr(torch, "load", no_unpickling)
        with pytest.raises(ValueError) as info:
            sample_with(runner, path)
        monkeypatch.undo()
        assert one_line(info.value).startswith(f"{name} is not a safe weights file (safetensors): it is a pickle")


@pytest.mark.parametrize("content, why", [
    ("truncated", "it is truncated"),
    ("text", "it has only 5 bytes"),
    ("long text", "it is truncated or is not safetensors data"),
])
def test_a_lora_file_that_is_not_safetensors_is_one_line(trained, runner, tmp_path, content, why):
    path = tmp_path / "lora.safetensors"
    if content == "truncated":
        data = open(trained[1]["kohya"], "rb").read()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_text("hello" if content == "text" else "hello, this is not a LoRA at all\n" * 10)
    with pytest.raises(ValueError) as info:
        sample_with(runner, path)
    assert one_line(info.value).startswith("lora.safetensors is not a safe weights file (safetensors): " + why)


def test_a_lora_with_keys_this_model_cannot_place_names_them(lora_files, runner, tmp_path):
    tensors = dict(lora_files["kohya"])
    tensors["lora_unet_no_such_layer.lora_down.weight"] = torch.zeros(4, 8)
    tensors["lora_unet_no_such_layer.lora_up.weight"] = torch.zeros(8, 4)
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as info:
        sample_with(runner, path)
    text = one_line(info.value)
    assert text.startswith(f"other.safetensors: 2 of its {len(tensors)} weights are not LoRA weights this SD 1.x")
    assert "lora_unet_no_such_layer.lora_down.weight" in text


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_a_lora_of_the_wrong_shape_names_the_layer(lora_files, runner, tmp_path, fmt):
    tensors = dict(lora_files[fmt])
    key = first_key(tensors, "lora_down" if fmt == "kohya" else "lora_A")
    rank, width = tensors[key].shape
    tensors[key] = torch.zeros(rank, width + 3)
    path = tmp_path / "wide.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as info:
        sample_with(runner, path)
    text = one_line(info.value)
    assert text.startswith("wide.safetensors does not fit this model (1 problem: ")
    assert f"down: file [{rank}, {width + 3}], the layer needs [{rank}, {width}]" in text


@pytest.mark.parametrize("fmt, value", [("kohya", float("nan")), ("diffusers", float("inf"))])
def test_a_lora_with_non_finite_weights_says_so_instead_of_a_black_image(lora_files, runner, tmp_path, fmt, value):
    tensors = dict(lora_files[fmt])
    key = first_key(tensors, "lora_up" if fmt == "kohya" else "lora_B")
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0] = value
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as info:
        sample_with(runner, path)
    text = one_line(info.value)
    assert "the LoRA file broken.safetensors holds NaN or infinite values in 1 of its" in text and key in text
    assert not (runner.workspace / "samples").exists()  # no black image was written


def test_a_bad_lora_fails_when_the_sampler_node_runs_not_at_the_first_preview(runner, tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a safe weights file"):
        runner.run(Sample, "sample", {"model": None}, lora=str(path))  # settings only, for train.sample_hook


def test_a_pickled_lora_is_an_error_at_validation(registry, lora_files, tmp_path):
    path = tmp_path / "pickled.safetensors"
    torch.save(lora_files["kohya"], path)
    text = f"format: nodetrainer.graph/1\nname: x\nnodes:\n  sample:\n    type: sd.sample@1\n" \
           f"    params: {{lora: {path}}}\n"
    v = validate_text(registry, text)
    [problem] = v.errors
    assert (problem.node, problem.field) == ("sample", "param 'lora'")
    assert problem.message.startswith("pickled.safetensors is not a safe weights file (safetensors): it is a pickle")


def test_sampling_a_model_whose_trained_weights_are_nan_says_so(runner):
    from nodes.sd.lora import LoraSetup

    adapted = runner.run(LoraSetup, "lora", {"model": build_tiny(seed=0)}, rank=2)["adapted"]
    name, weight = next(iter(adapted.named_trainable_parameters()))
    with torch.no_grad():
        weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError) as info:
        runner.run(Sample, "sample", {"model": adapted}, width=32, height=32, steps=2, device="cpu")
    text = one_line(info.value)
    assert text.startswith("the model holds NaN or infinite values in 1 of its") and name in text
    assert "training has diverged" in text
    assert not (runner.workspace / "samples").exists()


def test_sampling_with_a_lora_file_leaves_the_global_generator_alone(trained, runner):
    """peft initialises the layers it loads the file into: that draw is seeded, not global."""
    state = torch.random.get_rng_state()
    sample_with(runner, trained[1]["kohya"])
    assert torch.equal(state, torch.random.get_rng_state())


def test_embedding_setup_leaves_the_global_generator_alone(runner):
    """Resizing the token table draws its new rows from torch's generator; that draw is seeded."""
    from nodes.sd.embedding import EmbeddingSetup

    model = build_tiny(seed=0)
    with torch.random.fork_rng(devices=[]):  # a table with no spare rows, as in real SD models
        model.text_encoder.resize_token_embeddings(len(model.tokenizer), mean_resizing=False)
    state = torch.random.get_rng_state()
    out = runner.run(EmbeddingSetup, "emb", {"model": model}, placeholder="<x>", vectors=2)["adapted"]
    assert out.text_encoder.get_input_embeddings().num_embeddings == len(model.tokenizer) + 2  # it resized
    assert torch.equal(state, torch.random.get_rng_state())


def test_names_with_a_final_newline_are_refused(runner):
    from nodes.sd.embedding import EmbeddingSetup
    from nodes.saving import check_name

    with pytest.raises(ValueError, match="plain file name"):
        check_name("model\n")
    with pytest.raises(ValueError, match="one word"):
        runner.run(EmbeddingSetup, "emb", {"model": build_tiny()}, placeholder="<tok>\n")


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_taken(tmp_path):
    """A header of 0x..80 bytes (about one file in 256) or one whose length begins with "PK" is safetensors,
    not a pickle: only an impossible length or a header that is not a JSON object is refused."""
    import json

    from safetensors.torch import load_file

    from nodes.weights_check import safetensors_problem

    for length in (0x180, 0x4B50):  # first byte 0x80; first bytes "PK"
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        header += b" " * (length - len(header))  # safetensors pads headers with spaces
        path = tmp_path / f"h{length}.safetensors"
        path.write_bytes(length.to_bytes(8, "little") + header + b"\0\0\0\0")
        assert path.read_bytes()[:1] == b"\x80" or path.read_bytes()[:2] == b"PK"
        assert safetensors_problem(path) is None
        assert load_file(path)["w"].shape == (1,)  # safetensors itself reads it
    pickled = tmp_path / "p.safetensors"
    torch.save({"w": torch.zeros(1)}, pickled)
    assert safetensors_problem(pickled).startswith("it is a pickle")
