"""train.flow_matching_objective: sigma sampling schemes, fixed and dynamic shift, loss weights, the
interpolation and velocity target, per-sample weights, offset noise, determinism, a toy that learns, and
the validation refusals between DDPM and flow-matching objectives and models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from runtime import Output, node
from runtime.graph_file import loads_graph
from runtime.port_types import FlowMatchingModel, value_type
from runtime.validate import validate

from nodes.train.flow import FlowMatchingBundle
from nodes.train.flow_objective import (FlowMatchingObjective, FlowMatchingObjectiveNode, loss_weights,
                                        sample_sigmas, shift_sigmas)
from tests.train.helpers import ListBatches, make_toy, train_inputs

N = 100_000  # draws per distribution check: quantiles within ~0.005
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


@dataclass(eq=False)
class ToyFlow(FlowMatchingBundle):
    """A flow-matching toy: a small conv net on 4x8x8 latents with sigma as a fifth input channel."""

    net: object = None
    noise_scheduler: object = None
    seq_len: int | None = None  # image_seq_len to report (None: FlowMatchingBundle's 2x2 patches)
    progress: dict = field(default_factory=dict)
    family = "toyflow"
    part_names = ("net",)

    def latents(self, batch):
        return batch["latent"].to(self.device)

    def image_seq_len(self, latents):
        return super().image_seq_len(latents) if self.seq_len is None else self.seq_len

    def predict(self, noisy, sigmas, batch):
        import torch

        s = sigmas.reshape(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[2:])
        return self.net(torch.cat([noisy, s], dim=1))


class Recording(FlowMatchingBundle):
    """Returns ``value`` as its prediction and keeps what it was called with."""

    family = "recording"

    def __init__(self, value: float = 0.0, seq_len: int = 16, scheduler=None):
        self.value, self.seq_len, self.noise_scheduler, self.calls = value, seq_len, scheduler, []

    def latents(self, batch):
        return batch["latent"]

    def image_seq_len(self, latents):
        return self.seq_len

    def predict(self, noisy, sigmas, batch):
        import torch

        self.calls.append((noisy.clone(), sigmas.clone()))
        return torch.full_like(noisy, self.value)


def make_flow(seed: int = 0, **scheduler_config) -> ToyFlow:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(5, 16, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(16, 4, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return ToyFlow(net, FlowMatchEulerDiscreteScheduler(**scheduler_config))


def gen(seed: int = 0):
    import torch

    return torch.Generator().manual_seed(seed)


def quantiles(x):
    import torch

    return torch.quantile(x[:N].double(), torch.tensor(QUANTILES, dtype=torch.float64)).float()


def normal_icdf(q: float) -> float:
    import torch

    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(q, dtype=torch.float64)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def batch_of(x0, **extra):
    return {"latent": x0, **extra}


# -- sampling schemes: the distribution of sigma -----------------------------------------------------------

def assert_quantiles(sigmas, expected):
    import torch

    assert sigmas.shape == (N,) and sigmas.dtype == torch.float32
    assert float(sigmas.min()) >= 0.0 and float(sigmas.max()) <= 1.0
    torch.testing.assert_close(quantiles(sigmas), torch.tensor(expected, dtype=torch.float32), atol=0.01, rtol=0)


def test_uniform_sigma_is_uniform_on_0_1():
    sigmas = sample_sigmas("uniform", N, gen())
    assert_quantiles(sigmas, QUANTILES)
    assert float(sigmas.mean()) == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (1.0, 1.0), (-1.0, 0.5)])
def test_logit_normal_sigma_is_the_sigmoid_of_a_normal_and_a_positive_mean_means_more_noise(mean, std):
    sigmas = sample_sigmas("logit_normal", N, gen(1), logit_mean=mean, logit_std=std)
    assert_quantiles(sigmas, [sigmoid(mean + std * normal_icdf(q)) for q in QUANTILES])
    # the sign SD3 and OneTrainer use (diffusers' examples, indexing the descending schedule, invert it:
    # there logit_mean=+1 gives a mean sigma of 0.305)
    if mean > 0:
        assert float(sigmas.mean()) == pytest.approx(0.695, abs=0.01)
    if mean < 0:
        assert float(sigmas.median()) == pytest.approx(sigmoid(-1.0), abs=0.01)


@pytest.mark.parametrize("scale", [1.29, 0.0, -0.5])
def test_mode_sigma_follows_sd3s_f_mode(scale):
    sigmas = sample_sigmas("mode", N, gen(2), mode_scale=scale)

    def f_mode(u):  # decreasing in u: the q-quantile of f(U) is f(1 - q)
        return 1 - u - scale * (math.cos(math.pi * u / 2) ** 2 - 1 + u)

    assert_quantiles(sigmas, [f_mode(1 - q) for q in QUANTILES])
    # scale > 0 gathers sigma in the middle, < 0 pushes it to the ends
    middle = float(((sigmas > 0.25) & (sigmas < 0.75)).float().mean())
    if scale == 0:
        assert middle == pytest.approx(0.5, abs=0.01)
    else:
        assert (middle > 0.55) if scale > 0 else (middle < 0.45), middle


def test_cosmap_sigma_follows_sd3s_cosmap():
    sigmas = sample_sigmas("cosmap", N, gen(3))
    assert_quantiles(sigmas, [1 - 1 / (math.tan(math.pi * q / 2) + 1) for q in QUANTILES])
    # its density is 2 / (pi (1 - 2s + 2s^2)): the mass of [0.4, 0.6] is (2/pi) * (atan(0.2) - atan(-0.2))
    inside = float(((sigmas > 0.4) & (sigmas < 0.6)).float().mean())
    assert inside == pytest.approx(2 / math.pi * 2 * math.atan(0.2), abs=0.005)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_sigmoid_sigma_is_the_sigmoid_of_a_scaled_standard_normal(scale):
    sigmas = sample_sigmas("sigmoid", N, gen(4), sigmoid_scale=scale)
    assert_quantiles(sigmas, [sigmoid(scale * normal_icdf(q)) for q in QUANTILES])


def test_inverted_parabola_and_beta_sigmas_are_onetrainers_shared_with_the_ddpm_objective(runner):
    from nodes.train.timesteps import Shape, sample_fractions

    parabola = sample_sigmas("inverted_parabola", N, gen(12))  # curvature 8, center 0.5: density 6s(1-s)
    assert_quantiles(parabola, _beta22_quantiles(QUANTILES))
    shape = Shape(beta_alpha=2.0, beta_beta=5.0)
    beta = sample_sigmas("beta", N, gen(13), shape=shape)
    assert beta.mean().item() == pytest.approx(2 / 7, abs=0.003)
    assert torch_equal(beta, sample_fractions("beta", N, gen(13), shape).float())
    obj = runner.run(FlowMatchingObjectiveNode, "fm", sampling="beta", beta_alpha=2.0, beta_beta=5.0,
                     parabola_curvature=3.0, distribution_center=0.2)["objective"]
    assert obj.shape == Shape(beta_alpha=2.0, beta_beta=5.0, parabola_curvature=3.0, center=0.2)


def _beta22_quantiles(qs):
    """Quantiles of Beta(2, 2) (CDF 3x^2 - 2x^3), by bisection."""
    out = []
    for q in qs:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if 3 * mid ** 2 - 2 * mid ** 3 < q else (lo, mid)
        out.append(lo)
    return out


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_the_objective_hands_the_model_the_sampled_sigmas_and_reports_their_mean():
    import torch

    for scheme in ("uniform", "logit_normal", "mode", "cosmap", "sigmoid"):
        model = Recording()
        x0 = torch.zeros(64, 4, 2, 2)
        _, metrics = FlowMatchingObjective(sampling=scheme, logit_mean=0.7).loss(model, batch_of(x0), gen(5))
        [(_, sigmas)] = model.calls
        g = gen(5)
        torch.randn(x0.shape, generator=g)  # the noise is drawn first, then the sigmas
        expected = sample_sigmas(scheme, 64, g, logit_mean=0.7)
        torch.testing.assert_close(sigmas, expected)
        assert metrics["sigma_mean"] == pytest.approx(float(expected.mean()), abs=1e-6)


# -- shift -----------------------------------------------------------------------------------------------

def test_a_fixed_shift_maps_sigma_to_s_sigma_over_1_plus_s_minus_1_sigma():
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    x0 = torch.zeros(1000, 4, 2, 2)
    plain, _ = FlowMatchingObjective(sampling="uniform").sigmas(Recording(), x0, gen(6))
    shifted, shift = FlowMatchingObjective(sampling="uniform", shift=3.0).sigmas(Recording(), x0, gen(6))
    assert shift == 3.0
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    assert float(shifted.mean()) > float(plain.mean()) + 0.15  # more noise
    # the formula is the one diffusers' scheduler applies to its training sigmas
    grid = FlowMatchEulerDiscreteScheduler().sigmas
    torch.testing.assert_close(shift_sigmas(grid, 3.0), FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas)


@pytest.mark.parametrize("seq_len, expected", [(256, 1.649), (1024, 1.878), (4096, 3.158)])
def test_the_dynamic_shift_is_e_mu_of_the_models_token_count(seq_len, expected):
    """families.md 2.3's table (Flux: 256, 512, 1024 px), with the Flux dev scheduler config."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    flux = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    model = Recording(seq_len=seq_len, scheduler=flux)
    x0 = torch.zeros(500, 4, 2, 2)
    plain, one = FlowMatchingObjective(sampling="uniform").sigmas(model, x0, gen(7))
    sigmas, shift = FlowMatchingObjective(sampling="uniform", dynamic_shift=True).sigmas(model, x0, gen(7))
    assert one == 1.0 and shift == pytest.approx(expected, abs=1e-3)
    torch.testing.assert_close(sigmas, shift_sigmas(plain, shift))
    _, metrics = FlowMatchingObjective(dynamic_shift=True).loss(model, batch_of(x0[:2]), gen(7))
    assert metrics["shift"] == pytest.approx(expected, abs=1e-3)


def test_the_dynamic_shift_reads_the_token_count_of_each_batch_from_the_model():
    import torch

    model = make_flow()  # FlowMatchingBundle.image_seq_len: (H/2) * (W/2) tokens
    obj = FlowMatchingObjective(dynamic_shift=True)
    assert obj.sigmas(model, torch.zeros(2, 4, 32, 32), gen())[1] == pytest.approx(1.649, abs=1e-3)   # 256
    assert obj.sigmas(model, torch.zeros(2, 4, 128, 128), gen())[1] == pytest.approx(3.158, abs=1e-3)  # 4096


def test_the_dynamic_shift_settings_come_from_the_params_then_the_scheduler_config_then_the_defaults():
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    x0 = torch.zeros(2, 4, 2, 2)
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.3, max_shift=1.5,
                                            base_image_seq_len=100, max_image_seq_len=1100)
    at = Recording(seq_len=600, scheduler=sched)
    assert FlowMatchingObjective(dynamic_shift=True).shift_for(at, x0) == pytest.approx((0.9, math.exp(0.9)))
    given = FlowMatchingObjective(dynamic_shift=True, base_shift=0.1, max_seq_len=600)
    assert given.shift_for(at, x0)[0] == pytest.approx(1.5)
    bare = Recording(seq_len=4096, scheduler=None)
    assert FlowMatchingObjective(dynamic_shift=True).shift_for(bare, x0)[0] == pytest.approx(1.15)


def test_the_dynamic_shift_uses_the_schedulers_own_formula():
    """A scheduler whose time shift is linear takes mu itself as the shift (diffusers' ``time_shift``)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="linear")
    model = Recording(seq_len=4096, scheduler=sched)
    x0 = torch.zeros(300, 4, 2, 2)
    plain, _ = FlowMatchingObjective(sampling="uniform").sigmas(model, x0, gen(15))
    sigmas, shift = FlowMatchingObjective(sampling="uniform", dynamic_shift=True).sigmas(model, x0, gen(15))
    assert shift == pytest.approx(1.15)
    torch.testing.assert_close(sigmas, sched.time_shift(1.15, 1.0, plain))
    torch.testing.assert_close(sigmas, shift_sigmas(plain, 1.15))


def test_the_sigma_range_maps_the_shifted_sigma_linearly():
    import torch

    x0 = torch.zeros(400, 4, 2, 2)
    plain, _ = FlowMatchingObjective(shift=2.0).sigmas(Recording(), x0, gen(8))
    ranged, _ = FlowMatchingObjective(shift=2.0, min_sigma=0.2, max_sigma=0.6).sigmas(Recording(), x0, gen(8))
    torch.testing.assert_close(ranged, 0.2 + 0.4 * plain)


# -- interpolation, target, loss ----------------------------------------------------------------------------

def noise_and_sigmas(x0, seed: int, **params):
    """The noise and sigmas the objective draws for ``x0``'s shape, read back from a zero batch (x_t = sigma * noise)."""
    import torch

    model = Recording()
    FlowMatchingObjective(min_sigma=0.1, **params).loss(model, batch_of(torch.zeros_like(x0)), gen(seed))
    [(x_t, sigmas)] = model.calls
    return x_t / sigmas.reshape(-1, 1, 1, 1), sigmas


def test_x_t_is_the_interpolation_and_the_target_is_noise_minus_x0():
    import torch

    x0 = torch.randn(3, 4, 8, 8, generator=gen(100))
    noise, sigmas = noise_and_sigmas(x0, seed=9)
    s = sigmas.reshape(-1, 1, 1, 1)
    model = Recording(value=0.25)
    loss, _ = FlowMatchingObjective(min_sigma=0.1).loss(model, batch_of(x0), gen(9))
    [(x_t, same)] = model.calls
    torch.testing.assert_close(same, sigmas)
    torch.testing.assert_close(x_t, (1 - s) * x0 + s * noise, atol=1e-5, rtol=1e-5)
    target = noise - x0
    assert float(loss) == pytest.approx(float(((0.25 - target) ** 2).mean()), rel=1e-5)
    l1, _ = FlowMatchingObjective(min_sigma=0.1, loss_kind="l1").loss(Recording(0.25), batch_of(x0), gen(9))
    assert float(l1) == pytest.approx(float((0.25 - target).abs().mean()), rel=1e-5)
    huber, _ = FlowMatchingObjective(min_sigma=0.1, loss_kind="huber", huber_delta=0.5).loss(
        Recording(0.25), batch_of(x0), gen(9))
    expected = torch.nn.functional.huber_loss(torch.full_like(target, 0.25), target, delta=0.5)
    assert float(huber) == pytest.approx(float(expected), rel=1e-5)


def test_the_loss_weights_are_the_formulas():
    import torch

    s = torch.tensor([0.05, 0.2, 0.5, 0.8, 1.0])
    torch.testing.assert_close(loss_weights("none", s), torch.ones(5))
    torch.testing.assert_close(loss_weights("sigma_sqrt", s), s ** -2)
    torch.testing.assert_close(loss_weights("cosmap", s), 2 / (math.pi * (1 - 2 * s + 2 * s ** 2)))
    assert float(loss_weights("sigma_sqrt", torch.tensor([0.0]))) == pytest.approx(1e6)  # finite at sigma 0


@pytest.mark.parametrize("weighting", ["sigma_sqrt", "cosmap"])
def test_the_objective_weights_each_samples_loss_by_its_sigma(weighting):
    import torch

    x0 = torch.randn(4, 4, 8, 8, generator=gen(101))
    noise, sigmas = noise_and_sigmas(x0, seed=10)
    per_sample = ((noise - x0) ** 2).mean(dim=(1, 2, 3))
    loss, _ = FlowMatchingObjective(min_sigma=0.1, loss_weighting=weighting).loss(Recording(), batch_of(x0), gen(10))
    assert float(loss) == pytest.approx(float((loss_weights(weighting, sigmas) * per_sample).mean()), rel=1e-5)


def test_per_sample_loss_weights_apply():
    import torch

    x0 = torch.randn(2, 4, 8, 8, generator=gen(102))
    noise, _ = noise_and_sigmas(x0, seed=11)
    per_sample = ((noise - x0) ** 2).mean(dim=(1, 2, 3))
    obj = FlowMatchingObjective(min_sigma=0.1)
    plain, _ = obj.loss(Recording(), batch_of(x0), gen(11))
    weighted, _ = obj.loss(Recording(), batch_of(x0, loss_weight=torch.tensor([1.0, 0.0])), gen(11))
    assert float(plain) == pytest.approx(float(per_sample.mean()), rel=1e-5)
    assert float(weighted) == pytest.approx(float(per_sample[0]) / 2, rel=1e-5)


def test_offset_noise_adds_a_per_channel_constant():
    import torch

    x0 = torch.zeros(3, 4, 8, 8)
    plain, _ = noise_and_sigmas(x0, seed=12)
    offset, _ = noise_and_sigmas(x0, seed=12, offset_noise=0.5)
    diff = offset - plain
    assert float(diff.std(dim=(2, 3)).max()) < 1e-4  # constant over each channel's pixels
    assert float(diff.abs().mean()) > 0.1 and float(diff[:, :, 0, 0].std()) > 0.1  # and not the same everywhere


def test_the_same_generator_seed_gives_the_same_loss_and_another_seed_another():
    import torch

    model = make_flow()
    x0 = torch.randn(4, 4, 8, 8, generator=gen(103))
    obj = FlowMatchingObjective(dynamic_shift=True, offset_noise=0.1)
    with torch.no_grad():
        a, ma = obj.loss(model, batch_of(x0), gen(13))
        b, mb = obj.loss(model, batch_of(x0), gen(13))
        c, _ = obj.loss(model, batch_of(x0), gen(14))
    assert float(a) == float(b) and ma == mb
    assert float(a) != float(c)


def test_training_the_toy_with_adamw_for_30_steps_lowers_the_loss(runner):
    import torch

    from nodes.train.loop import TrainLoop

    model = make_flow()
    batches = ListBatches(n=8, batch_size=4, size=8)
    # latents with per-channel means: something to learn beyond the noise (for pure N(0, 1) latents a
    # velocity predictor can do little better than its first guess)
    batches.latent = torch.linspace(-1.5, 1.5, 4).reshape(1, 4, 1, 1) + 0.2 * batches.latent
    obj = FlowMatchingObjective()
    probe = batch_of(batches.latent)

    def probe_loss():  # the same noise and sigmas before and after
        with torch.no_grad():
            return float(sum(obj.loss(model, probe, gen(seed))[0] for seed in range(8)) / 8)

    before = probe_loss()
    runner.run(TrainLoop, "train", train_inputs(model, batches, lr=1e-2, optimizer="adamw", objective=obj),
               max_steps=30, device="cpu")
    assert [e["step"] for e in runner.events("progress", "train")][-1] == 30
    after = probe_loss()
    assert after < 0.5 * before, (before, after)


def test_the_objective_refuses_a_ddpm_model_at_run_time_naming_itself():
    import torch

    with pytest.raises(TypeError, match="train.flow_matching_objective trains models with flow matching; the 'toy' "
                                        "model is not one"):
        FlowMatchingObjective().loss(make_toy(), batch_of(torch.zeros(1, 4, 8, 8)), gen())


# -- the node, validation and the CLI ---------------------------------------------------------------------

ToyFlowModel = value_type("ToyFlowModel", FlowMatchingModel, doc="the flow-matching toy's model (tests)")


@node("flowtest.toy_model", title="Toy flow model", category="Model")
class ToyFlowNode:
    """The flow-matching toy model."""

    model = Output(ToyFlowModel, doc="the model")

    def run(self, ctx):
        return {"model": make_flow()}


@pytest.fixture(scope="module")
def reg():
    from tests.runtime.test_passthrough_types import family_registry

    reg = family_registry(ToyFlowNode)
    reg.register_package("nt_testpack", "test pack")  # test.toy_batches
    return reg


GRAPH = """
nodes:
  sd: {type: sd.tiny_model}
  toy: {type: flowtest.toy_model}
  ddpm: {type: train.diffusion_objective}
  fm: {type: train.flow_matching_objective, params: PARAMS}
  opt: {type: train.optimizer}
  batches: {type: test.toy_batches}
  train:
    type: train.loop
    in: {model: MODEL, batches: batches.batches, optimizer: opt.optimizer, objective: OBJECTIVE}
"""


def check(reg, model: str, objective: str, params: str = "{}"):
    text = GRAPH.replace("MODEL", model).replace("OBJECTIVE", objective).replace("PARAMS", params)
    result = validate(loads_graph(text, reg), reg)
    return result, [p for p in result.problems if p.severity == "error"]


def test_the_flow_matching_objective_trains_a_flow_matching_model(reg):
    result, errors = check(reg, "toy.model", "fm.objective")
    assert errors == [] and result.ok, [str(p) for p in result.problems]


def test_the_flow_matching_objective_refuses_a_ddpm_model_at_validation_naming_both_types(reg):
    result, [problem] = check(reg, "sd.model", "fm.objective")
    assert problem.node == "train" and problem.code == "type_mismatch" and not result.ok
    assert "fm.objective (input 'objective') serves FlowMatchingModel models, but sd.model is SDModel" \
        in problem.message


def test_the_ddpm_objective_refuses_a_flow_matching_model_at_validation_naming_both_types(reg):
    result, [problem] = check(reg, "toy.model", "ddpm.objective")
    assert problem.node == "train" and problem.code == "type_mismatch" and not result.ok
    assert "ddpm.objective (input 'objective') serves DDPMModel models, but toy.model is ToyFlowModel" \
        in problem.message


@pytest.mark.parametrize("params, param, words", [
    ("{min_sigma: 0.6, max_sigma: 0.4}", "min_sigma", "min_sigma 0.6 must be below max_sigma 0.4"),
    ("{shift: 3.0, dynamic_shift: true}", "shift", "shift 3.0 and dynamic_shift both set"),
    ("{base_seq_len: 4096, max_seq_len: 256}", "base_seq_len", "base_seq_len 4096 must be below max_seq_len 256"),
])
def test_contradictory_params_are_refused_at_validation_naming_the_param(reg, params, param, words):
    _, [problem] = check(reg, "toy.model", "fm.objective", params)
    assert problem.node == "fm" and problem.field == f"param {param!r}" and words in problem.message


def test_the_node_builds_the_objective_from_its_params(runner):
    out = runner.run(FlowMatchingObjectiveNode, "fm", sampling="mode", mode_scale=0.5, shift=2.0,
                     loss_weighting="cosmap", loss="huber", huber_delta=0.3, offset_noise=0.05, max_sigma=0.9)
    obj = out["objective"]
    assert isinstance(obj, FlowMatchingObjective)
    assert (obj.sampling, obj.mode_scale, obj.shift, obj.loss_weighting, obj.loss_kind, obj.huber_delta,
            obj.offset_noise, obj.min_sigma, obj.max_sigma) == ("mode", 0.5, 2.0, "cosmap", "huber", 0.3, 0.05,
                                                               0.0, 0.9)
    assert obj.base_shift is None and not obj.dynamic_shift
    with pytest.raises(ValueError, match="min_sigma 0.9 must be below max_sigma 0.5"):
        runner.run(FlowMatchingObjectiveNode, "fm", min_sigma=0.9, max_sigma=0.5)


def test_describe_shows_it_serves_flow_matching_models(capsys):
    from runtime.cli import main

    assert main(["nodes", "--describe", "train.flow_matching_objective"]) == 0
    out = capsys.readouterr().out
    assert "objective: Objective (value, serves FlowMatchingModel models)" in out
    assert "positive = more noise" in out and "image_seq_len" in out
