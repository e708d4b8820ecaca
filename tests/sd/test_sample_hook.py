"""sd.sample as a sampler for train.sample_hook: previews of the tiny SD model during training, with EMA."""

from __future__ import annotations

import json

from tests.sd.conftest import TokenBatches


def test_previews_during_training_live_and_ema(runner):
    from PIL import Image

    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.sd.sampler import Sample
    from nodes.train.ema import Ema
    from nodes.train.hook_nodes import SamplePreviews
    from nodes.train.loop import TrainLoop
    from tests.train.helpers import train_inputs

    model = build_tiny(seed=0)
    adapted = runner.run(LoraSetup, "lora", {"model": model}, rank=2, alpha=2.0)["adapted"]
    settings = runner.run(Sample, "sample", {"model": None}, prompts=["a red circle"], width=32, height=32,
                          steps=2, device="cpu")
    assert settings["images"] == [], "without a model the node only hands its settings on"
    previews = runner.run(SamplePreviews, "previews", {"samplers": [settings["sampler"]]}, every=2)["hook"]
    ema = runner.run(Ema, "ema", decay=0.9)["hook"]
    runner.run(TrainLoop, "train", train_inputs(adapted, TokenBatches(model), lr=0.05, hooks=[previews, ema]),
               max_steps=2, device="cpu")
    folder = runner.workspace / "samples"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["step000002-00-a-red-circle-0-ema.png", "step000002-00-a-red-circle-0.png"]
    meta = json.loads(Image.open(folder / names[0]).text["nodetrainer"])
    assert meta["train_step"] == 2 and meta["weights"] == "ema"
    events = runner.events("sample", "train")
    assert [(e["step"], e["tag"]) for e in events] == [(2, ""), (2, "ema")]
    assert {e["total"] for e in runner.events("progress", "train")} == {2}, "sampling sent no progress of its own"
    assert adapted.unet.training is False  # train.loop ends in inference mode
