"""Test-only node types for the editor tests: typed value and sample ports, multi inputs,
every param kind. They never run; the editor only needs their specs."""

from __future__ import annotations

from runtime import Choice, Dir, File, Input, Output, Param, Seed, StrList, Text, node
from runtime.port_types import VAE, BatchSource, Caption, DiffusionModel, Field, Hook, Image, Latent


@node("test.load_model", title="Load model", category="Model")
class LoadModel:
    """Load a diffusion model.

    A longer paragraph about loading."""

    model = Output(DiffusionModel, doc="the loaded model")
    vae = Output(VAE, doc="its autoencoder")
    path = Param(File(), "model.safetensors", doc="checkpoint file")
    dtype = Param(Choice("float32", "float16", "bfloat16"), "float16", doc="weight precision")

    def run(self, ctx):
        return {"model": None, "vae": None}


@node("test.lora", title="LoRA", category="Setup")
class Lora:
    """Wrap the model with LoRA adapters."""

    model = Input(DiffusionModel, doc="base model")
    adapted = Output(DiffusionModel, doc="adapted model")
    rank = Param(int, 16, min=1, max=1024, doc="LoRA rank")
    alpha = Param(float, 16.0, min=0, doc="scale = alpha / rank")
    dropout = Param(float, 0.0, min=0.0, max=1.0, doc="dropout")
    targets = Param(Choice("attn", "attn-mlp", "all-linear"), "attn", doc="which layers")

    def run(self, ctx, model):
        return {"adapted": model}


@node("test.images", title="Image folder", category="Data")
class Images:
    """Images with captions from a folder."""

    image = Output(Image, doc="the image")
    caption = Output(Caption, doc="its caption")
    folder = Param(Dir(), doc="folder of images")
    repeats = Param(int, 1, min=1, doc="repeat each image")

    def run(self, ctx):
        return {"image": None, "caption": None}


@node("test.encode", title="Encode image", category="Data")
class Encode:
    """Encode images to latents."""

    image = Input(Image, doc="image to encode")
    vae = Input(VAE, doc="the autoencoder")
    latent = Output(Latent, doc="the latent")

    def run(self, ctx, image, vae):
        return {"latent": None}


@node("test.batches", title="Batches", category="Data")
class Batches:
    """Collate fields into batches."""

    fields = Input(Field, doc="fields to batch", multi=True)
    batches = Output(BatchSource, doc="the batches")
    batch_size = Param(int, 4, min=1, max=4096, doc="items per batch")

    def run(self, ctx, fields):
        return {"batches": None}


@node("test.sample_hook", title="Sample previews", category="Hooks")
class SampleHook:
    """Sample images every N steps."""

    hook = Output(Hook, doc="the hook")
    every = Param(int, 100, min=1, doc="steps between samples")
    prompts = Param(StrList, ["a photo of a cat"], doc="prompts to sample")

    def run(self, ctx):
        return {"hook": None}


@node("test.train", title="Train", category="Training")
class Train:
    """The training loop."""

    model = Input(DiffusionModel, doc="model to train")
    batches = Input(BatchSource, doc="training batches")
    hooks = Input(Hook, doc="hooks", optional=True, multi=True)
    steps = Param(int, 1000, min=1, doc="optimizer steps")
    lr = Param(float, 1e-6, min=0.0, doc="learning rate")
    seed = Param(Seed, 42, doc="random seed")
    notes = Param(Text, "", doc="free notes")
    prompts = Param(StrList, [], doc="validation prompts")
    save_to = Param(File(mode="save"), "out.safetensors", doc="where to save")
    use_ema = Param(bool, False, doc="keep an EMA copy")

    def run(self, ctx, model, batches, hooks):
        return None


CLASSES = [LoadModel, Lora, Images, Encode, Batches, SampleHook, Train]
