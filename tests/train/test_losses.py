"""The loss kinds both objectives share (MSE, MAE, log-cosh, Huber, a weighted mix), the DDPM timestep
weightings (min-SNR-gamma, debiased estimation, P2), the params' checks and that every option is listed
by ``nodetrainer nodes --describe``."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.train.flow_objective import FlowMatchingObjective, FlowMatchingObjectiveNode
from nodes.train.losses import elementwise_loss
from nodes.train.objective import (DiffusionObjective, DiffusionObjectiveNode, debiased_weights, p2_weights,
                                   snr)
from tests.conftest import run_cli
from tests.train.helpers import make_toy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_each_loss_kind_is_its_formula_and_log_cosh_does_not_overflow():
    pred = torch.tensor([0.0, 0.5, -2.0, 3.0])
    target = torch.zeros(4)
    d = pred - target
    torch.testing.assert_close(elementwise_loss("mse", pred, target), d ** 2)
    torch.testing.assert_close(elementwise_loss("l1", pred, target), d.abs())
    torch.testing.assert_close(elementwise_loss("huber", pred, target, 1.0),
                               torch.where(d.abs() < 1, 0.5 * d ** 2, d.abs() - 0.5))
    torch.testing.assert_close(elementwise_loss("log_cosh", pred, target), torch.log(torch.cosh(d)))
    big = elementwise_loss("log_cosh", torch.tensor([200.0, -200.0]), torch.zeros(2))
    torch.testing.assert_close(big, torch.full((2,), 200.0 - math.log(2.0)))


def test_a_mix_is_the_weighted_sum_of_its_terms():
    pred, target = torch.randn(2, 4, 3, 3, generator=gen(1)), torch.randn(2, 4, 3, 3, generator=gen(2))
    strengths = {"mse_strength": 0.5, "mae_strength": 2.0, "log_cosh_strength": 0.25, "huber_strength": 3.0}
    mix = elementwise_loss("mix", pred, target, 0.3, strengths)
    expected = (0.5 * elementwise_loss("mse", pred, target) + 2.0 * elementwise_loss("l1", pred, target)
                + 0.25 * elementwise_loss("log_cosh", pred, target) + 3.0 * elementwise_loss("huber", pred, target, 0.3))
    torch.testing.assert_close(mix, expected)


@pytest.mark.parametrize("kind, expected", [("log_cosh", math.log(math.cosh(3.0))), ("mix", 2 * 9.0 + 0.5 * 3.0)])
def test_both_objectives_train_with_the_new_kinds(kind, expected):
    model = make_toy()
    model.predict = lambda noisy, t, batch: captured["noise"] + 3.0
    captured = {}
    obj = DiffusionObjective(loss_kind=kind, mse_strength=2.0, mae_strength=0.5)
    orig = obj.sample_noise
    obj.sample_noise = lambda x0, g: captured.setdefault("noise", orig(x0, g))
    assert obj.loss(model, {"latent": torch.zeros(2, 4, 2, 2)}, gen(0))[0].item() == pytest.approx(expected, rel=1e-5)
    from tests.train.test_flow_objective import Recording

    x0 = torch.zeros(2, 4, 4, 4)
    flow = FlowMatchingObjective(loss_kind=kind, mse_strength=2.0, mae_strength=0.5)
    # the Recording model predicts 0; the target noise - x0 is the noise, so the error is -noise
    loss, _ = flow.loss(Recording(), {"latent": x0}, gen(3))
    noise = torch.randn(x0.shape, generator=gen(3))
    direct = elementwise_loss(kind, torch.zeros_like(noise), noise, 1.0, {"mse_strength": 2.0, "mae_strength": 0.5})
    assert loss.item() == pytest.approx(direct.mean().item(), rel=1e-5)


def test_debiased_and_p2_weights_are_their_formulas():
    sched = make_toy().noise_scheduler
    t = torch.tensor([0, 10, 500, 999])
    ac = sched.alphas_cumprod[t].double()
    s = (ac / (1 - ac)).float()
    torch.testing.assert_close(snr(sched, t), s, rtol=1e-4, atol=0)
    torch.testing.assert_close(debiased_weights(sched, t, "epsilon"), 1 / torch.sqrt(s.clamp(max=1000)), rtol=1e-4, atol=0)
    torch.testing.assert_close(debiased_weights(sched, t, "v_prediction"), 1 / torch.sqrt(s.clamp(max=1000) + 1),
                               rtol=1e-4, atol=0)
    torch.testing.assert_close(p2_weights(sched, t, 0.5, 2.0, "epsilon"), (2.0 + s) ** -0.5, rtol=1e-4, atol=0)
    torch.testing.assert_close(p2_weights(sched, t, 1.0, 1.0, "v_prediction"), 1 / (2.0 + s), rtol=1e-4, atol=0)


@pytest.mark.parametrize("weighting", ["debiased_estimation", "p2", "min_snr_gamma"])
def test_the_objective_multiplies_each_item_by_its_timestep_weight(weighting):
    model = make_toy()
    model.predict = lambda noisy, t, batch: torch.zeros_like(noisy)
    x0 = torch.zeros(4, 4, 2, 2)
    obj = DiffusionObjective(loss_weighting=weighting, min_snr_gamma=5.0 if weighting == "min_snr_gamma" else 0.0,
                             p2_gamma=0.7, p2_k=1.5)
    loss, _ = obj.loss(model, {"latent": x0}, gen(4))
    g = gen(4)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    w = obj.timestep_weights(model.noise_scheduler, t, "epsilon")
    assert not torch.allclose(w, torch.ones(4))
    assert loss.item() == pytest.approx(((noise ** 2).mean(dim=(1, 2, 3)) * w).mean().item(), rel=1e-5)


@pytest.mark.parametrize("cls", [DiffusionObjectiveNode, FlowMatchingObjectiveNode])
@pytest.mark.parametrize("params, param", [
    ({"mae_strength": 1.0}, "mae_strength"),
    ({"loss": "huber", "mse_strength": 0.5}, "mse_strength"),
    ({"loss": "mix", "mse_strength": 0.0}, "mse_strength"),
])
def test_strengths_outside_a_mix_and_an_empty_mix_are_one_error_naming_the_param(runner, cls, params, param):
    problems = runner.make(cls, **params).problems()
    assert [p for p, _ in problems] == [param], problems
    with pytest.raises(ValueError, match=param):
        runner.run(cls, **params)
    assert runner.make(cls, loss="mix", mse_strength=0.0, huber_strength=1.0).problems() == []


NEW = {"train.diffusion_objective": (
    "loss", "mse_strength", "mae_strength", "log_cosh_strength", "huber_strength", "masked_training",
    "unmasked_probability", "unmasked_weight", "normalize_masked_area", "prior_loss_weight",
    "timestep_distribution", "logit_mean", "logit_std", "heavy_tail_scale", "sigmoid_steepness",
    "distribution_center", "parabola_curvature", "beta_alpha", "beta_beta", "timestep_shift",
    "generalized_offset_noise", "input_perturbation", "zero_terminal_snr", "loss_weighting", "p2_gamma", "p2_k"),
    "train.flow_matching_objective": (
    "loss", "mse_strength", "mae_strength", "log_cosh_strength", "huber_strength", "masked_training",
    "unmasked_probability", "unmasked_weight", "normalize_masked_area", "prior_loss_weight")}


@pytest.mark.parametrize("type_id", sorted(NEW))
def test_describe_lists_every_new_option_with_its_doc(type_id):
    r = run_cli("nodes", "--describe", type_id)
    assert r.returncode == 0, r.stderr
    lines = {line.split(":", 1)[0].strip(): line for line in r.stdout.splitlines() if line.startswith("  ")}
    for name in NEW[type_id]:
        assert name in lines, name
        assert len(lines[name].split("  ")[-1]) > 15, lines[name]  # a doc, not just the type
    assert "log_cosh" in lines["loss"] and "mix" in lines["loss"]
