"""train.diffusion_objective's noise and timesteps: each timestep distribution against its definition,
the shift, the range, determinism without the global RNG, generalized offset noise against the paper's
recursion, input perturbation, zero-terminal SNR, and that the defaults give the old results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.train.noise import offset_psi
from nodes.train.objective import DiffusionObjective, DiffusionObjectiveNode
from nodes.train.timesteps import Shape, sample_fractions, shift_fractions, to_timesteps
from tests.train.helpers import make_toy

N = 100_000
GRID = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def empirical_cdf(samples, xs):
    s = torch.sort(samples.double()).values
    return torch.searchsorted(s, xs).double() / len(s)


def numeric_cdf(density, xs, n=200_001):
    """CDF of an unnormalised density on [0, 1] by the trapezoid rule (independent of the sampler)."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    f = density(x)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((f[1:] + f[:-1]) / 2, 0)])
    c = c / c[-1]
    return torch.from_numpy(np.interp(xs.numpy(), x.numpy(), c.numpy()))


def test_logit_normal_heavy_tail_and_uniform_are_the_exact_transforms_of_a_seeded_draw():
    shape = Shape(logit_mean=0.7, logit_std=1.5, heavy_tail_scale=0.8)
    got = sample_fractions("logit_normal", 1000, gen(1), shape)
    torch.testing.assert_close(got, torch.sigmoid(0.7 + 1.5 * torch.randn(1000, generator=gen(1)).double()))
    u = torch.rand(1000, generator=gen(2)).double()
    heavy = sample_fractions("heavy_tail", 1000, gen(2), shape)
    torch.testing.assert_close(heavy, 1 - u - 0.8 * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u))
    torch.testing.assert_close(sample_fractions("heavy_tail", 1000, gen(2), Shape(heavy_tail_scale=0.0)), 1 - u)
    torch.testing.assert_close(sample_fractions("uniform", 1000, gen(2)), u)


@pytest.mark.parametrize("name, shape, density", [
    ("cos_map", Shape(), lambda x: 2 / (math.pi * (1 - 2 * x + 2 * x ** 2))),
    ("sigmoid", Shape(sigmoid_steepness=6.0, center=0.3), lambda x: torch.sigmoid(6.0 * (x - 0.3))),
    ("sigmoid", Shape(sigmoid_steepness=-4.0, center=0.5), lambda x: torch.sigmoid(-4.0 * (x - 0.5))),
    ("inverted_parabola", Shape(), lambda x: 6 * x * (1 - x)),
    ("inverted_parabola", Shape(parabola_curvature=20.0, center=0.7),
     lambda x: torch.clamp(2 - 20.0 * (x - 0.7) ** 2, min=0)),
    ("beta", Shape(beta_alpha=2.0, beta_beta=5.0), lambda x: x * (1 - x) ** 4),
])
def test_density_distributions_follow_their_definition(name, shape, density):
    samples = sample_fractions(name, N, gen(3), shape)
    assert samples.min() >= 0 and samples.max() <= 1
    assert (empirical_cdf(samples, GRID) - numeric_cdf(density, GRID)).abs().max() < 0.006


def test_beta_moments_and_the_default_inverted_parabola_is_beta_2_2():
    b = sample_fractions("beta", N, gen(4), Shape(beta_alpha=2.0, beta_beta=5.0))
    assert b.mean() == pytest.approx(2 / 7, abs=0.003)
    assert b.var() == pytest.approx(10 / (49 * 8), abs=0.001)
    small = sample_fractions("beta", N, gen(4), Shape(beta_alpha=0.6, beta_beta=1.0))  # B-TTDM's: CDF x^0.6
    assert (empirical_cdf(small, GRID) - GRID ** 0.6).abs().max() < 0.006
    p = sample_fractions("inverted_parabola", N, gen(4))
    assert (p.mean(), p.var()) == (pytest.approx(0.5, abs=0.003), pytest.approx(0.05, abs=0.001))


@pytest.mark.parametrize("name", ["uniform", "sigmoid", "logit_normal", "heavy_tail", "cos_map",
                                  "inverted_parabola", "beta"])
def test_every_distribution_is_seeded_and_leaves_the_global_rngs_alone(name):
    torch.manual_seed(5)
    np.random.seed(5)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    obj = DiffusionObjective(timestep_distribution=name, timestep_shift=2.0, shape=Shape(beta_alpha=0.5))
    sched = make_toy().noise_scheduler
    a = obj.sample_timesteps(64, sched, gen(6), "cpu")
    assert torch.equal(a, obj.sample_timesteps(64, sched, gen(6), "cpu"))
    assert not torch.equal(a, obj.sample_timesteps(64, sched, gen(7), "cpu"))
    assert torch.equal(torch_state, torch.get_rng_state()) and (np_state == np.random.get_state()[1]).all()


def test_shift_then_range_map_the_drawn_level_into_the_timesteps():
    obj = DiffusionObjective(timestep_distribution="logit_normal", timestep_shift=3.0, min_timestep=100,
                             max_timestep=600)
    t = obj.sample_timesteps(5000, make_toy().noise_scheduler, gen(8), "cpu")
    u = torch.sigmoid(torch.randn(5000, generator=gen(8)).double())
    shifted = 3 * u / (2 * u + 1)
    assert torch.equal(t, (100 + torch.floor(shifted * 500)).long().clamp(100, 599))
    assert t.min() >= 100 and t.max() <= 599
    assert shifted.mean() > u.mean() + 0.1  # s > 1: more noise
    assert torch.equal(to_timesteps(torch.tensor([0.0, 1.0]), 0, 1000), torch.tensor([0, 999]))
    assert shift_fractions(torch.tensor(0.5), 1.0) == 0.5


def test_the_defaults_draw_and_weigh_exactly_as_before():
    """Default settings: N(0,1) noise, then randint timesteps, MSE, mean (the objective before these options)."""
    model = make_toy()
    x0 = torch.randn(3, 4, 4, 4, generator=gen(9))
    loss, _ = DiffusionObjective().loss(model, {"latent": x0}, gen(10))
    g = gen(10)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    pred = model.net(model.noise_scheduler.add_noise(x0, noise, t))
    assert loss.item() == pytest.approx(((pred - noise) ** 2).mean().item(), rel=1e-6)


def paper_psi(betas):
    """psi_t by Algorithm 1 of "Generalized Diffusion Model with Adjusted Offset Noise" as written: the
    gamma recursion with C_t, normalised by psi_T, then psi_t = sum_i<=t gamma_i / sqrt(abar_{i-1}) / sqrt(1-abar_t)."""
    b = betas.double().tolist()
    a = [1 - x for x in b]
    abar, prev = [], 1.0
    for x in a:
        prev *= x
        abar.append(prev)
    abar_prev = [1.0] + abar[:-1]
    gammas = [1.0]
    total = gammas[0] / math.sqrt(abar_prev[0])
    for t in range(1, len(b)):
        c = (1 - a[t]) * math.sqrt(abar_prev[t]) / (a[t] * (1 - abar_prev[t]))
        gammas.append(c * total)
        total += gammas[t] / math.sqrt(abar_prev[t])
    psi_T = total / math.sqrt(1 - abar[-1])
    run, out = 0.0, []
    for t in range(len(b)):
        run += gammas[t] / psi_T / math.sqrt(abar_prev[t])
        out.append(run / math.sqrt(1 - abar[t]))
    return torch.tensor(out, dtype=torch.float64)


def test_generalized_offset_noise_psi_matches_the_paper_and_scales_the_offset_per_timestep():
    sched = make_toy().noise_scheduler
    reference = paper_psi(sched.betas)
    torch.testing.assert_close(offset_psi(torch.cumprod(1 - sched.betas.double(), 0)), reference, rtol=1e-9, atol=0)
    psi = offset_psi(sched.alphas_cumprod)  # what the objective uses: the schedule's float32 alpha_bar
    torch.testing.assert_close(psi, reference, rtol=1e-4, atol=1e-8)
    assert psi[-1] == pytest.approx(1.0) and (psi[1:] > psi[:-1]).all()
    obj = DiffusionObjective(offset_noise=0.2, generalized_offset_noise=True, min_timestep=10)
    x0 = torch.zeros(6, 4, 2, 2)
    noise, t = obj.noise_and_timesteps(x0, sched, gen(11))
    g = gen(11)
    base, offset = torch.randn(x0.shape, generator=g), torch.randn(6, 4, 1, 1, generator=g)
    assert torch.equal(t, torch.randint(10, 1000, (6,), generator=g))
    expected = base + 0.2 * psi.float()[t].reshape(-1, 1, 1, 1) * offset
    torch.testing.assert_close(noise, expected)


def test_input_perturbation_noises_the_input_but_not_the_target():
    model = make_toy()
    x0 = torch.randn(2, 4, 2, 2, generator=gen(12))
    g = gen(13)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    xi = torch.randn(x0.shape, generator=g)
    seen = {}

    def predict(noisy, timesteps, batch):
        seen["noisy"] = noisy
        return noise  # the exact epsilon target

    model.predict = predict
    loss, _ = DiffusionObjective(input_perturbation=0.1).loss(model, {"latent": x0}, gen(13))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(seen["noisy"], model.noise_scheduler.add_noise(x0, noise + 0.1 * xi, t))


def test_zero_terminal_snr_trains_v_on_a_cached_rescaled_copy_of_the_schedule():
    from diffusers import DDPMScheduler

    model = make_toy()
    obj = DiffusionObjective(zero_terminal_snr=True)
    assert obj.prediction_type(model) == "v_prediction"
    sched = obj.schedule(model, "v_prediction")
    assert sched is obj.schedule(model, "v_prediction") and sched is not model.noise_scheduler
    reference = DDPMScheduler.from_config(model.noise_scheduler.config, rescale_betas_zero_snr=True)
    torch.testing.assert_close(sched.alphas_cumprod, reference.alphas_cumprod)
    assert sched.alphas_cumprod[-1] < 1e-6 < model.noise_scheduler.alphas_cumprod[-1]
    x0 = torch.randn(2, 4, 2, 2, generator=gen(14))
    g = gen(15)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    model.predict = lambda noisy, timesteps, batch: sched.get_velocity(x0, noise, timesteps)
    assert obj.loss(model, {"latent": x0}, gen(15))[0].item() == pytest.approx(0.0, abs=1e-10)
    plain = model.noise_scheduler.get_velocity(x0, noise, t)  # the un-rescaled schedule's target differs
    assert (plain - sched.get_velocity(x0, noise, t)).abs().max() > 1e-3


@pytest.mark.parametrize("params, param", [
    ({"generalized_offset_noise": True}, "generalized_offset_noise"),
    ({"zero_terminal_snr": True, "prediction": "epsilon"}, "zero_terminal_snr"),
    ({"loss_weighting": "min_snr_gamma"}, "min_snr_gamma"),
    ({"loss_weighting": "p2", "min_snr_gamma": 5.0}, "min_snr_gamma"),
    ({"min_timestep": 500, "max_timestep": 400}, "min_timestep"),
])
def test_contradictory_settings_name_the_param(runner, params, param):
    node = runner.make(DiffusionObjectiveNode, **params)
    problems = node.problems()
    assert [p for p, _ in problems] == [param], problems
    with pytest.raises(ValueError, match=param.split("_")[0]):
        runner.run(DiffusionObjectiveNode, **params)


@pytest.mark.parametrize("params, param", [
    ("{generalized_offset_noise: true}", "generalized_offset_noise"),
    ("{loss_weighting: debiased_estimation, min_snr_gamma: 5}", "min_snr_gamma"),
    ("{loss: l1, huber_strength: 1}", "huber_strength"),
])
def test_contradictions_are_refused_at_validation_naming_the_node_and_param(params, param):
    from runtime.graph_file import loads_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    reg = default_registry()
    result = validate(loads_graph(f"nodes:\n  obj: {{type: train.diffusion_objective, params: {params}}}\n", reg), reg)
    [problem] = [p for p in result.problems if p.severity == "error" and p.node == "obj"]
    assert problem.field == f"param {param!r}" and param in problem.message
