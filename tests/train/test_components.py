"""train.optimizer, train.lr_schedule and train.diffusion_objective."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nodes.train.lr_schedule import LRScheduleNode
from nodes.train.objective import DiffusionObjective, DiffusionObjectiveNode, min_snr_weights
from nodes.train.optimizer import Optimizer
from tests.train.helpers import make_toy


def one_step(opt_spec, seed=0):
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.ones(4, 4))
    opt = opt_spec.build([w])
    (w ** 2).sum().backward()
    opt.step()
    return opt, w


@pytest.mark.parametrize("name,cls", [("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD"),
                                      ("adafactor", "Adafactor")])
def test_optimizers_build_and_step(runner, name, cls):
    spec = runner.run(Optimizer, name=name, lr=0.01, momentum=0.5)["optimizer"]
    opt, w = one_step(spec)
    assert type(opt).__name__ == cls
    assert opt.param_groups[0]["lr"] == 0.01
    assert (w < 1).all()  # every weight moved against its gradient


@pytest.mark.parametrize("name,package", [("adamw8bit", "bitsandbytes"), ("prodigy", "prodigyopt")])
def test_optional_optimizers_explain_a_missing_package(runner, name, package):
    if importlib.util.find_spec(package) is not None:
        spec = runner.run(Optimizer, name=name, lr=1.0)["optimizer"]
        assert spec.name == name
        return
    with pytest.raises(RuntimeError, match=rf"needs the '{package}' package.*pip install {package}"):
        runner.run(Optimizer, name=name)


def lrs(runner, steps=10, lr=1.0, **params):
    sched_spec = runner.run(LRScheduleNode, **params)["schedule"]
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=lr)
    sched = sched_spec.build(opt, steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_and_warmup_in_steps_or_fraction(runner):
    assert lrs(runner, name="constant") == [1.0] * 10
    assert lrs(runner, name="constant", warmup=4)[:5] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert lrs(runner, name="constant", warmup=0.2)[:3] == pytest.approx([0, 0.5, 1.0])  # 20% of 10 steps


def test_decaying_schedules(runner):
    linear = lrs(runner, name="linear")
    assert linear == pytest.approx([1 - i / 10 for i in range(10)])
    cosine = lrs(runner, name="cosine", steps=100)
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5, abs=0.01) and cosine[-1] < 0.01
    restarts = lrs(runner, name="cosine_with_restarts", cycles=2, steps=100)
    assert restarts[49] < 0.01 and restarts[50] == pytest.approx(1.0)  # second cycle restarts at the peak
    poly = lrs(runner, name="polynomial", power=2.0, steps=10)
    assert poly[5] == pytest.approx(0.25, abs=0.01)  # (1 - 5/10)^2


def test_objective_targets_noise_for_epsilon_and_velocity_for_v():
    """A model that outputs the exact target has zero loss; the other target does not."""
    for pred in ("epsilon", "v_prediction"):
        model = make_toy(prediction_type=pred)
        batch = {"latent": torch.randn(3, 4, 2, 2)}
        captured = {}

        def predict(noisy, t, batch, model=model, pred=pred):
            captured["noisy"], captured["t"] = noisy, t
            x0 = batch["latent"]
            noise = captured["noise"]
            return noise if pred == "epsilon" else model.noise_scheduler.get_velocity(x0, noise, t)

        obj = DiffusionObjective()
        orig = obj.sample_noise
        obj.sample_noise = lambda x0, g: captured.setdefault("noise", orig(x0, g))
        model.predict = predict
        loss, _ = obj.loss(model, batch, torch.Generator().manual_seed(0))
        assert loss.item() == pytest.approx(0.0, abs=1e-10)
        expected = model.noise_scheduler.add_noise(batch["latent"], captured["noise"], captured["t"])
        torch.testing.assert_close(captured["noisy"], expected)
        # forcing the other target makes the same prediction wrong
        other = "v_prediction" if pred == "epsilon" else "epsilon"
        captured.clear()
        obj2 = DiffusionObjective(prediction=other)
        obj2.sample_noise = lambda x0, g: captured.setdefault("noise", orig(x0, g))
        assert obj2.loss(model, batch, torch.Generator().manual_seed(0))[0].item() > 0.01


def test_timesteps_stay_in_range_and_offset_noise_shifts_channels():
    sched = make_toy().noise_scheduler
    obj = DiffusionObjective(min_timestep=200, max_timestep=300, offset_noise=1.0)
    t = obj.sample_timesteps(2000, sched, torch.Generator().manual_seed(0), "cpu")
    assert t.min() >= 200 and t.max() <= 299 and len(set(t.tolist())) > 90
    x0 = torch.zeros(64, 4, 16, 16)
    plain = DiffusionObjective().sample_noise(x0, torch.Generator().manual_seed(0))
    offset = obj.sample_noise(x0, torch.Generator().manual_seed(0))
    # per-(sample, channel) means: plain noise ~ N(0, 1/256); offset adds a N(0, 1) constant per channel
    assert plain.mean(dim=(2, 3)).std() < 0.15 < offset.mean(dim=(2, 3)).std()


def test_min_snr_weights_match_the_formula():
    sched = make_toy().noise_scheduler
    t = torch.tensor([10, 500, 990])
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    eps = min_snr_weights(sched, t, 5.0, "epsilon")
    v = min_snr_weights(sched, t, 5.0, "v_prediction")
    torch.testing.assert_close(eps, torch.clamp(snr, max=5.0) / snr)
    torch.testing.assert_close(v, torch.clamp(snr, max=5.0) / (snr + 1))
    assert eps[0] < 1.0 and eps[2] == pytest.approx(1.0)  # low noise: SNR above gamma gets down-weighted


@pytest.mark.parametrize("kind", ["mse", "l1", "huber"])
def test_loss_kinds(kind):
    model = make_toy()
    pred_offset = 3.0
    model.predict = lambda noisy, t, batch: captured["noise"] + pred_offset
    captured = {}
    obj = DiffusionObjective(loss_kind=kind, huber_delta=1.0)
    orig = obj.sample_noise
    obj.sample_noise = lambda x0, g: captured.setdefault("noise", orig(x0, g))
    loss = obj.loss(model, {"latent": torch.zeros(2, 4, 2, 2)}, torch.Generator().manual_seed(0))[0].item()
    expected = {"mse": 9.0, "l1": 3.0, "huber": 2.5}[kind]  # huber: delta * (|e| - delta / 2)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_objective_node_checks_the_timestep_range(runner):
    with pytest.raises(ValueError, match="min_timestep 500 must be below max_timestep 400"):
        runner.run(DiffusionObjectiveNode, min_timestep=500, max_timestep=400)
    obj = runner.run(DiffusionObjectiveNode, min_snr_gamma=5.0, loss="huber")["objective"]
    assert (obj.min_snr_gamma, obj.loss_kind) == (5.0, "huber")


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_torch_optimizers_use_the_fused_kernel_and_train_like_the_default(runner, name):
    from nodes.train.optimizer import fused_kernel

    spec = runner.run(Optimizer, name=name, lr=0.05, momentum=0.5)["optimizer"]
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(8, 4, generator=gen), torch.randn(4, generator=gen)]
    fused = [torch.nn.Parameter(t.clone()) for t in start]
    plain = [torch.nn.Parameter(t.clone()) for t in start]
    opt = spec.build([{"params": fused}])
    assert opt.param_groups[0]["fused"] is True
    reference = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    extra = {"betas": spec.betas, "eps": spec.eps} if name != "sgd" else {"momentum": spec.momentum}
    ref = reference(plain, lr=0.05, weight_decay=spec.weight_decay, foreach=False, **extra)
    for _ in range(5):
        for o, ws in ((opt, fused), (ref, plain)):
            o.zero_grad()
            sum((w ** 2).sum() for w in ws).backward()
            o.step()
    for a, b, s in zip(fused, plain, start):
        assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a.detach(), s)
    assert fused_kernel([torch.nn.Parameter(torch.zeros(2, device="meta"))]) == {}
