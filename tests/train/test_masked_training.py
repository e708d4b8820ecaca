"""Masked training: a batch's ``mask`` (white = train, any resolution) weights the loss of both objectives.
A fully masked-out region gets no gradient, normalisation divides by the mask's area, the unmasked
probability trains whole items, and a real tiny SD data graph with mask files carries them to train.loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.train.flow_objective import FlowMatchingObjective
from nodes.train.losses import LossTerms, latent_mask
from nodes.train.objective import DiffusionObjective
from tests.train.helpers import make_toy

HERE = Path(__file__).parent


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def left_half_masked_out(n=2, size=16):
    """(n, 1, size, size) pixel masks: the left half 0 (not trained), the right half 1."""
    mask = torch.ones(n, 1, size, size)
    mask[..., : size // 2] = 0.0
    return mask


class PredictLeaf:
    """Wraps a model: its prediction is the model's plus a zero leaf tensor, to read d loss / d prediction."""

    def __init__(self, model, shape):
        self.leaf = torch.zeros(shape, requires_grad=True)
        inner = model.predict
        model.predict = lambda noisy, t, batch: inner(noisy, t, batch) + self.leaf


def objectives(**kw):
    from tests.train.test_flow_objective import make_flow

    return [(make_toy(), DiffusionObjective(**kw)), (make_flow(), FlowMatchingObjective(min_sigma=0.1, **kw))]


@pytest.mark.parametrize("which", [0, 1], ids=["ddpm", "flow"])
def test_a_fully_masked_out_region_receives_no_gradient(which):
    model, obj = objectives(unmasked_weight=0.0, unmasked_probability=0.0)[which]
    x0 = torch.randn(2, 4, 8, 8, generator=gen(1)).requires_grad_(True)
    leaf = PredictLeaf(model, x0.shape).leaf
    loss, _ = obj.loss(model, {"latent": x0, "mask": left_half_masked_out(size=32)}, gen(2))
    loss.backward()
    # 32 px -> 8 latent cells: columns 0-3 come from masked-out pixels only
    assert leaf.grad[..., :4].abs().max() == 0 and leaf.grad[..., 4:].abs().min() > 0
    # the toy denoisers see latent cells locally (DDPM: 1x1 convs; flow: two 3x3, 2 cells each way): the
    # input latents' gradient is exactly zero where no trained output cell sees them
    cols = 4 if which == 0 else 2
    assert x0.grad[..., :cols].abs().max() == 0 and x0.grad[..., 4:].abs().sum() > 0
    # without the mask the same region trains
    model, obj = objectives(masked_training="off")[which]
    leaf = PredictLeaf(model, x0.shape).leaf
    obj.loss(model, {"latent": x0.detach(), "mask": left_half_masked_out(size=32)}, gen(2))[0].backward()
    assert leaf.grad[..., :4].abs().min() > 0


def test_the_mask_is_area_resized_to_the_latent():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :2, :3] = 1.0  # the top-left 4x4 block is 6/16 white
    got = latent_mask(mask, (1, 4, 2, 2), "node")
    torch.testing.assert_close(got, torch.tensor([[[[6 / 16, 0.0], [0.0, 0.0]]]]))
    # a list of (1, H, W) masks, and a mask smaller than the latent
    small = latent_mask([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)], (2, 4, 4, 4), "node")
    assert small.shape == (2, 1, 4, 4) and small[0].min() == 1 and small[1].max() == 0


def test_normalised_masked_loss_divides_by_the_mean_mask_weight():
    pred, target = torch.full((2, 4, 4, 4), 2.0), torch.zeros(2, 4, 4, 4)  # MSE 4 everywhere
    mask = left_half_masked_out()
    batch = {"mask": mask}
    plain = LossTerms(unmasked_weight=0.25, unmasked_probability=0.0).reduce(pred, target, batch, gen())
    norm = LossTerms(unmasked_weight=0.25, unmasked_probability=0.0, normalize_masked_area=True).reduce(
        pred, target, batch, gen())
    mean_weight = (0.25 + 1.0) / 2
    torch.testing.assert_close(plain, torch.full((2,), 4.0 * mean_weight))
    torch.testing.assert_close(norm, torch.full((2,), 4.0))  # a uniform error: the mask's area cancels
    empty = LossTerms(unmasked_weight=0.0, unmasked_probability=0.0, normalize_masked_area=True).reduce(
        pred, target, {"mask": torch.zeros(2, 1, 8, 8)}, gen())
    assert torch.equal(empty, torch.zeros(2))  # nothing to train: 0, not NaN


def test_unmasked_probability_trains_whole_items_seeded():
    terms = LossTerms(unmasked_weight=0.0, unmasked_probability=0.3)
    batch = {"mask": torch.zeros(4000, 1, 2, 2)}
    w = terms.mask_weights(batch, (4000, 4, 2, 2), gen(3))
    whole = w.flatten(1).min(dim=1).values == 1
    assert torch.equal(whole, w.flatten(1).max(dim=1).values == 1)  # all or nothing per item
    assert whole.float().mean().item() == pytest.approx(0.3, abs=0.025)
    assert torch.equal(w, terms.mask_weights(batch, (4000, 4, 2, 2), gen(3)))
    assert torch.equal(LossTerms(unmasked_probability=1.0).mask_weights(batch, (4000, 4, 2, 2), gen(3)),
                       torch.ones(4000, 1, 2, 2))


def test_masked_training_on_needs_a_mask_field_and_off_ignores_it():
    with pytest.raises(ValueError, match="masked_training is on but the batches have no field 'mask'"):
        DiffusionObjective(masked_training="on").loss(make_toy(), {"latent": torch.zeros(1, 4, 2, 2)}, gen())
    x0, mask = torch.randn(2, 4, 4, 4, generator=gen(4)), left_half_masked_out()
    plain, _ = DiffusionObjective().loss(make_toy(), {"latent": x0}, gen(5))
    off, _ = DiffusionObjective(masked_training="off").loss(make_toy(), {"latent": x0, "mask": mask}, gen(5))
    auto, _ = DiffusionObjective().loss(make_toy(), {"latent": x0, "mask": mask}, gen(5))
    assert off.item() == plain.item() != auto.item()


def write_dataset(folder: Path, white: bool) -> Path:
    """Two demo images with captions and a '-masklabel.png' each (all white or all black)."""
    from PIL import Image

    from runtime.paths import ASSETS_DIR

    folder.mkdir()
    for name in ("circle_red.png", "square_orange.png"):
        src = ASSETS_DIR / "demo_dataset" / name
        (folder / name).write_bytes(src.read_bytes())
        (folder / name).with_suffix(".txt").write_text(src.with_suffix(".txt").read_text())
        size = Image.open(src).size
        Image.new("L", size, 255 if white else 0).save(folder / f"{Path(name).stem}-masklabel.png")
    return folder


def run_graph(tmp_path: Path, dataset: Path, *sets: str) -> list[float]:
    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry

    reg = default_registry()
    v = validate_graph(reg, load_graph(HERE / "graphs" / "masked_sd.yaml", reg), f"dataset={dataset}", *sets)
    sink = ListSink()
    r = execute(v, workspace=tmp_path / "run", bus=EventBus([sink]), targets=("train",))
    assert r.ok, r.error
    return [e["loss"] for e in sink.of("progress") if e.get("node") == "train"]


def validate_graph(reg, graph, *sets):
    from runtime.validate import validate

    v = validate(graph, reg, list(sets))
    assert v.ok, [str(p) for p in v.problems]
    return v


def test_masks_from_the_data_graph_reach_the_loss_in_train_loop(tmp_path):
    black = write_dataset(tmp_path / "black", white=False)
    losses = run_graph(tmp_path / "a", black)
    assert losses == [0.0, 0.0]  # every pixel masked out, unmasked_weight 0: nothing to learn
    unmasked = run_graph(tmp_path / "b", black, "objective.masked_training=off")
    white = run_graph(tmp_path / "c", write_dataset(tmp_path / "white", white=True))
    assert len(unmasked) == 2 and min(unmasked) > 0
    assert white == pytest.approx(unmasked)  # a white mask trains everything, as no mask does
