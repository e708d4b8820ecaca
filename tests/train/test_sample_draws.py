"""``draws`` of both objectives: per_sample gives each item its own draws (noise, timestep or sigma, offset,
input perturbation, unmasked choice) from (seed, node, epoch, index), whatever batch it is in; per_batch
is the loop generator's draws in the order the objectives always made them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

from nodes.train.ddpm import DDPMBundle
from nodes.train.flow import FlowMatchingBundle
from nodes.train.flow_objective import FlowMatchingObjective, FlowMatchingObjectiveNode
from nodes.train.objective import DiffusionObjective, DiffusionObjectiveNode
from nodes.train.sample_draws import SampleDraws, draw
from nodes.train.timesteps import Shape
from tests.train.helpers import NodeRunner

B = 4


class Recording:
    """Predicts half its input and keeps (input, timesteps or sigmas) of every call."""

    family = "recording"

    def __init__(self, scheduler):
        self.noise_scheduler, self.prediction_type, self.calls = scheduler, "epsilon", []

    def latents(self, batch):
        return batch["latent"]

    def image_seq_len(self, latents):
        return 16

    def predict(self, noisy, t, batch):
        self.calls.append((noisy.clone(), t.clone()))
        return 0.5 * noisy


class RecordingDDPM(Recording, DDPMBundle):
    def __init__(self):
        super().__init__(DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))


class RecordingFlow(Recording, FlowMatchingBundle):
    def __init__(self):
        super().__init__(FlowMatchEulerDiscreteScheduler())


def gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def whole_batch(epoch: int = 3, mask: bool = False) -> dict:
    g = gen(11)
    batch = {"latent": torch.randn(B, 4, 8, 8, generator=g), "_epoch": epoch, "_index": [5, 9, 2, 14]}
    if mask:
        batch["mask"] = (torch.rand(B, 1, 16, 16, generator=g) > 0.5).float()
    return batch


def part(batch: dict, rows: slice) -> dict:
    out = {k: v[rows] for k, v in batch.items() if k not in ("_epoch", "_index")}
    return {**out, "_epoch": batch["_epoch"], "_index": batch["_index"][rows]}


DDPM_SETTINGS = [
    {},
    {"offset_noise": 0.1, "input_perturbation": 0.1},
    {"offset_noise": 0.1, "generalized_offset_noise": True, "timestep_distribution": "beta",
     "shape": Shape(beta_alpha=2.0, beta_beta=3.0)},
    {"timestep_distribution": "logit_normal", "timestep_shift": 3.0, "masked_training": "on",
     "unmasked_probability": 0.5},
]
FLOW_SETTINGS = [
    {},
    {"offset_noise": 0.1, "sampling": "mode"},
    {"sampling": "beta", "shape": Shape(beta_alpha=2.0, beta_beta=3.0), "shift": 3.0},
    {"sampling": "cosmap", "masked_training": "on", "unmasked_probability": 0.5},
]
CASES = ([(DiffusionObjective, RecordingDDPM, s) for s in DDPM_SETTINGS]
         + [(FlowMatchingObjective, RecordingFlow, s) for s in FLOW_SETTINGS])


def run(objective, model_cls, batch: dict, generator_seed: int = 0):
    """(loss, noisy inputs, timesteps or sigmas) of one call."""
    model = model_cls()
    loss, _ = objective.loss(model, batch, gen(generator_seed))
    (noisy, t), = model.calls
    return loss, noisy, t


@pytest.mark.parametrize("cls, model_cls, settings", CASES)
def test_per_sample_draws_do_not_depend_on_the_split_of_the_batch(cls, model_cls, settings):
    """A batch of 4 and the same items as two batches of 2 (each with another loop generator, as on two
    ranks) give every item the same noisy input, timestep or sigma and loss (the unmasked choices too)."""
    objective = cls(draws="per_sample", draw_seed=123, **settings)
    batch = whole_batch(mask=settings.get("masked_training") == "on")
    loss, noisy, t = run(objective, model_cls, batch, generator_seed=0)
    halves = [run(objective, model_cls, part(batch, rows), generator_seed=seed)
              for rows, seed in ((slice(0, 2), 1), (slice(2, 4), 2))]
    torch.testing.assert_close(torch.cat([h[1] for h in halves]), noisy, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([h[2] for h in halves]), t, rtol=0, atol=1e-6)
    assert float(loss) == pytest.approx(sum(float(h[0]) for h in halves) / 2, abs=1e-6)
    if cls is DiffusionObjective:
        assert torch.equal(torch.cat([h[2] for h in halves]), t)


@pytest.mark.parametrize("cls, model_cls", [(DiffusionObjective, RecordingDDPM), (FlowMatchingObjective, RecordingFlow)])
def test_per_sample_draws_follow_the_item_its_epoch_and_the_seed(cls, model_cls):
    """Reordering the items reorders the draws; another epoch or seed draws anew; items differ."""
    base = whole_batch()
    _, noisy, t = run(cls(draws="per_sample", draw_seed=1), model_cls, base)
    order = [2, 0, 3, 1]
    shuffled = {"latent": base["latent"][order], "_epoch": 3, "_index": [base["_index"][i] for i in order]}
    _, noisy2, t2 = run(cls(draws="per_sample", draw_seed=1), model_cls, shuffled)
    torch.testing.assert_close(noisy2, noisy[order], rtol=0, atol=1e-6)
    torch.testing.assert_close(t2, t[order], rtol=0, atol=1e-6)
    assert len(set(t.tolist())) == B
    for other in (run(cls(draws="per_sample", draw_seed=1), model_cls, whole_batch(epoch=4)),
                  run(cls(draws="per_sample", draw_seed=2), model_cls, base)):
        assert not torch.equal(other[2], t) and not torch.allclose(other[1], noisy)


@pytest.mark.parametrize("node_cls", [DiffusionObjectiveNode, FlowMatchingObjectiveNode])
def test_per_sample_without_epoch_or_index_is_one_clear_error(node_cls, tmp_path):
    """Batches from a source without ``_epoch`` / ``_index``: an error naming the node type and the param."""
    objective = NodeRunner(tmp_path).run(node_cls, "obj", draws="per_sample")["objective"]
    model = RecordingDDPM() if node_cls is DiffusionObjectiveNode else RecordingFlow()
    batch = whole_batch()
    for missing in ("_epoch", "_index"):
        partial = {k: v for k, v in batch.items() if k != missing}
        with pytest.raises(ValueError, match=rf"{node_cls.__node_spec__.type_id}: draws per_sample needs the "
                                             rf"batch fields '{missing}'.*set draws to per_batch"):
            objective.loss(model, partial, gen())


@pytest.mark.parametrize("node_cls", [DiffusionObjectiveNode, FlowMatchingObjectiveNode])
def test_the_nodes_declare_draws_and_seed_and_mix_the_seed_with_the_node_id(node_cls, tmp_path):
    spec = node_cls.__node_spec__
    assert spec.params["draws"].default == "per_batch" and "GPUs" in spec.params["draws"].doc
    assert spec.params["seed"].doc
    runner = NodeRunner(tmp_path)
    a = runner.run(node_cls, "a", draws="per_sample", seed=7)["objective"]
    b = runner.run(node_cls, "b", draws="per_sample", seed=7)["objective"]
    assert a.draws == "per_sample" and a.draw_seed == runner.ctx("a").seed_for(7) != b.draw_seed
    assert runner.run(node_cls, "c")["objective"].draws == "per_batch"


def test_draw_gives_each_sample_its_own_generator():
    draws = SampleDraws([1, 2, 3])
    got = draw(draws, 3, lambda n, g: torch.randn(n, 2, generator=g))
    assert torch.equal(got, torch.cat([torch.randn(1, 2, generator=gen(s)) for s in (1, 2, 3)]))
    with pytest.raises(ValueError, match="2 samples to draw for, but 3"):
        draw(draws, 2, lambda n, g: torch.randn(n, generator=g))


# -- per_batch: the loop generator's draws, in the objectives' order as it was -------------------------

def old_ddpm(x0, scheduler, g, offset=0.0, perturbation=0.0, beta=None, unmasked=0.0):
    """The DDPM objective's draws as written before ``draws``: noise, offset, timesteps, perturbation,
    unmasked choice, each from the one generator for the whole batch."""
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float32)
    if offset:
        noise = noise + offset * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=g)
    if beta is None:
        t = torch.randint(0, 1000, (x0.shape[0],), generator=g)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        u = torch.from_numpy(np.random.default_rng(seed).beta(*beta, x0.shape[0]))
        t = (torch.floor(u * 1000)).clamp(0, 999).long()
    noised = noise
    if perturbation:
        noised = noise + perturbation * torch.randn(x0.shape, generator=g, dtype=torch.float32)
    whole = torch.rand(x0.shape[0], generator=g) < unmasked if unmasked else None
    return scheduler.add_noise(x0, noised, t), t, whole


@pytest.mark.parametrize("settings, old", [
    ({}, {}),
    ({"offset_noise": 0.1, "input_perturbation": 0.2}, {"offset": 0.1, "perturbation": 0.2}),
    ({"timestep_distribution": "beta", "shape": Shape(beta_alpha=2.0, beta_beta=3.0)}, {"beta": (2.0, 3.0)}),
])
def test_per_batch_ddpm_draws_are_the_old_ones(settings, old):
    model = RecordingDDPM()
    batch = whole_batch()
    model.latents(batch)
    DiffusionObjective(**settings).loss(model, batch, gen(5))
    noisy, t, _ = old_ddpm(batch["latent"], model.noise_scheduler, gen(5), **old)
    assert torch.equal(model.calls[0][1], t)
    assert torch.equal(model.calls[0][0], noisy)


def test_per_batch_unmasked_choices_come_after_the_noise_as_before():
    """The unmasked-probability draw is the generator's next after noise and timesteps: the loss equals
    the one computed from the old draw order."""
    model = RecordingDDPM()
    batch = whole_batch(mask=True)
    objective = DiffusionObjective(masked_training="on", unmasked_probability=0.5, unmasked_weight=0.0)
    loss, _ = objective.loss(model, batch, gen(6))
    noisy, t, whole = old_ddpm(batch["latent"], model.noise_scheduler, gen(6), unmasked=0.5)
    assert whole.any() and not whole.all()  # the check below tells the two draws apart
    noise = torch.randn(batch["latent"].shape, generator=gen(6))
    w = torch.nn.functional.interpolate(batch["mask"], size=(8, 8), mode="area").clamp(0, 1)
    w[whole] = 1.0
    expected = (((0.5 * noisy - noise) ** 2) * w).mean(dim=(1, 2, 3)).mean()
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("settings, scheme", [({}, "logit_normal"), ({"offset_noise": 0.1, "sampling": "mode"}, "mode")])
def test_per_batch_flow_draws_are_the_old_ones(settings, scheme):
    model = RecordingFlow()
    batch = whole_batch()
    FlowMatchingObjective(**settings).loss(model, batch, gen(8))
    x0, g = batch["latent"], gen(8)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float32)
    if settings.get("offset_noise"):
        noise = noise + 0.1 * torch.randn((B, 4, 1, 1), generator=g)
    sigmas = compute_density_for_timestep_sampling(scheme, B, logit_mean=0.0, logit_std=1.0, mode_scale=1.29,
                                                   generator=g).float()
    s = sigmas.reshape(-1, 1, 1, 1)
    assert torch.equal(model.calls[0][1], sigmas)
    assert torch.equal(model.calls[0][0], (1.0 - s) * x0 + s * noise)


def test_every_preset_gives_its_objective_the_graphs_seed():
    """A preset's ``seed`` input reaches the objective too, so with draws per_sample another graph seed
    draws other noise (as it does for train.loop's per_batch draws)."""
    from runtime.graph_file import load_graph
    from runtime.paths import presets
    from runtime.registry import default_registry
    from runtime.validate import validate

    registry = default_registry()
    checked = 0
    for path in presets():
        graph = load_graph(path, registry)
        objectives = [n for n, node in graph.nodes.items() if node.type.endswith("_objective")]
        if not objectives or "seed" not in graph.inputs:
            continue
        result = validate(graph, registry, ["seed=7"])
        assert all(result.nodes[n].params["seed"] == 7 for n in objectives), path.name
        checked += 1
    assert checked >= 10
