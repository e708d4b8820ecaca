"""train.optimizer: every optimizer of the catalogue builds from the node, trains, takes its settings,
per-part learning rates and kernel choices, and says which package to install when one is missing."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import warnings

import pytest
import torch

from nodes.train.optimizer import Optimizer, OptimizerConfig
from nodes.train.optimizers import NAMES, OPTIMIZERS, SETTINGS, build_optimizer, effective_lrs, missing_package
from nodes.train.optimizers.entry import split_key
from runtime.checks import CheckContext

ONE_RATE = {"prodigy", "dadapt_sgd", "dadapt_lion", "dadapt_adagrad", "dadapt_adan"}  # one lr for all groups


def available(name: str) -> bool:
    entry = OPTIMIZERS[name]
    return entry.package is None or importlib.util.find_spec(entry.package) is not None


def each_optimizer():
    return [pytest.param(n, marks=pytest.mark.skipif(not available(n), reason=f"{OPTIMIZERS[n].pip} missing"))
            for n in NAMES]


def peak_lr(name: str) -> float:
    return 1.0 if OPTIMIZERS[name].adaptive else 1e-2


def tiny_net(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(64, 8, generator=g)
    return net, x, x[:, :1] * 0.5


def loss_of(net, x, y):
    return ((net(x) - y) ** 2).mean()


def train_steps(opt, net, x, y, steps: int) -> list[float]:
    if callable(getattr(opt, "train", None)):
        opt.train()
    losses = []
    for _ in range(steps):
        loss = loss_of(net, x, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


@pytest.fixture(autouse=True)
def quiet_libraries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name", each_optimizer())
def test_each_optimizer_builds_from_the_node_and_lowers_a_loss(runner, name):
    # prodigy-plus and D-Adapt AdaGrad start from d0 = 1e-6 and grow d slowly: a larger d0 keeps it short
    extra = {"d0": 1e-3} if name in ("prodigy_plus_schedule_free", "dadapt_adagrad") else {}
    spec = runner.run(Optimizer, name=name, lr=peak_lr(name) * (10 if "lars" in name or "lamb" in name else 1),
                      **extra)["optimizer"]
    net, x, y = tiny_net()
    opt = spec.build([{"params": list(net.parameters())}])
    assert type(opt).__name__ == OPTIMIZERS[name].target.rpartition(":")[2]
    losses = train_steps(opt, net, x, y, 25)
    assert losses[-1] < 0.97 * losses[0], f"{name}: {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize("name", each_optimizer())
def test_table_maps_settings_to_real_constructor_arguments(name):
    entry = OPTIMIZERS[name]
    params = inspect.signature(entry.constructor().__init__).parameters
    for setting, key in entry.settings.items():
        assert setting in SETTINGS, f"{name}: {setting} has no doc"
        assert split_key(key)[0] in params, f"{name}: {setting} -> {key} is not an argument of {entry.target}"
    assert set(entry.defaults) <= set(entry.settings)


def changed_value(entry, setting):
    """A valid value of ``setting`` that differs from what the optimizer would use unset."""
    kind = SETTINGS[setting][0]
    default = entry.resolved(setting, None)
    if kind is bool:
        return not default if isinstance(default, bool) else True
    if setting.startswith("beta"):
        return {"beta1": 0.8, "beta2": 0.85, "beta3": 0.95}[setting]
    if kind is int:
        return (default or 2) + 1
    if not default or (isinstance(default, float) and math.isinf(default)):
        return 0.25
    return default * 0.5


# combinations a library refuses, and settings that need a GPU or pick an alternative implementation
INCOMPATIBLE = {"sgd": {"dampening"}, "sgd8bit": {"dampening"}, "lars8bit": {"dampening"}, "lars": {"dampening"},
                "adafactor": {"relative_step", "warmup_init"}, "lion": {"use_triton"},
                "prodigy_plus_schedule_free": {"use_grams", "use_speed"}}


@pytest.mark.parametrize("name", each_optimizer())
def test_every_setting_reaches_the_constructor(name, monkeypatch):
    entry = OPTIMIZERS[name]
    values = {s: changed_value(entry, s) for s in entry.settings
              if s not in INCOMPATIBLE.get(name, set()) and s != "paged"}
    seen = {}
    real = entry.constructor()

    class Spy(real):
        @functools.wraps(real.__init__)
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **kwargs)

    module, _, attr = entry.target.partition(":")
    monkeypatch.setattr(importlib.import_module(module), attr, Spy)
    net, _, _ = tiny_net()
    opt = build_optimizer(name, peak_lr(name), values, [{"params": list(net.parameters())}])
    assert isinstance(opt, Spy)
    for setting, value in values.items():
        kw, index = split_key(entry.settings[setting])
        got = seen[kw] if index is None else seen[kw][index]
        assert got == value, f"{name}: {setting} gave {kw}={got!r}, wanted {value!r}"


@pytest.mark.parametrize("name,settings,where", [
    ("adamw", {"beta1": 0.8, "amsgrad": True, "eps": 1e-6}, {"betas": (0.8, 0.999), "amsgrad": True, "eps": 1e-6}),
    ("sgd", {"momentum": 0.7, "nesterov": True}, {"momentum": 0.7, "nesterov": True, "weight_decay": 0.01}),
    ("adafactor", {"eps": 1e-29, "eps2": 2e-3, "clip_threshold": 0.5},
     {"eps": (1e-29, 2e-3), "clip_threshold": 0.5, "relative_step": False}),
    ("lion", {"beta2": 0.98}, {"betas": (0.9, 0.98)}),
    ("came", {"beta3": 0.999, "eps2": 1e-15}, {"betas": (0.9, 0.999, 0.999), "eps2": 1e-15, "weight_decay": 0.01}),
    ("ademamix", {"alpha": 4.0}, {"alpha": 4.0, "betas": (0.9, 0.999, 0.9999)}),
    ("schedule_free_adamw", {"warmup_steps": 7, "r": 0.5}, {"warmup_steps": 7, "r": 0.5, "weight_decay": 0.01}),
    ("prodigy", {"d0": 1e-5, "slice_p": 11}, {"d0": 1e-5, "slice_p": 11}),
    ("prodigy_plus_schedule_free", {"factored": False, "beta2": 0.9}, {"factored": False, "betas": (0.9, 0.9)}),
    ("dadapt_adan", {"beta3": 0.9, "no_prox": True}, {"betas": (0.98, 0.92, 0.9), "no_prox": True}),
    ("adopt", {"decouple": True}, {"weight_decouple": True, "betas": (0.9, 0.9999)}),
])
def test_settings_land_in_the_param_groups(name, settings, where):
    if not available(name):
        pytest.skip(f"{OPTIMIZERS[name].pip} missing")
    net, _, _ = tiny_net()
    opt = build_optimizer(name, peak_lr(name), settings, list(net.parameters()))
    group = opt.param_groups[0]
    for key, value in where.items():
        assert group[key] == (pytest.approx(value) if isinstance(value, tuple) else value), key


def test_muon_takes_the_matrices_and_an_auxiliary_adamw_the_rest():
    if not available("muon"):
        pytest.skip("pytorch-optimizer missing")
    net, _, _ = tiny_net()
    groups = [{"params": list(net[0].parameters()), "name": "a"}, {"params": list(net[2].parameters()), "lr": 0.02}]
    opt = OptimizerConfig("muon", 0.01, extra={"muon_adam_lr": 0.001, "ns_steps": 3},
                          betas=(0.8, 0.9)).build(groups)
    summary = [(g.get("name"), g["use_muon"], [tuple(p.shape) for p in g["params"]], g["lr"]) for g in opt.param_groups]
    assert summary == [("a", True, [(16, 8)], 0.01), ("a", False, [(16,)], 0.001),
                       (None, True, [(1, 16)], 0.02), (None, False, [(1,)], pytest.approx(0.002))]
    assert opt.param_groups[0]["ns_steps"] == 3 and opt.param_groups[1]["betas"] == (0.8, 0.9)


@pytest.mark.parametrize("name", each_optimizer())
def test_per_part_learning_rates_act_on_each_part(name):
    """Part b at half the rate moves half as far in the first steps as it does at the full rate (ADOPT and
    schedule-free RAdam make no update in their first steps); small rates keep the steps in proportion."""
    lr = peak_lr(name) * (1 if OPTIMIZERS[name].adaptive else 1e-2)

    def first_step(rate_b):
        net, x, y = tiny_net()
        groups = [{"params": list(net[0].parameters()), "name": "a"},
                  {"params": list(net[2].parameters()), "name": "b", **({"lr": rate_b} if rate_b else {})}]
        before = [p.detach().clone() for p in net[2].parameters()]
        extra = {"min_8bit_size": 1} if name.endswith("8bit") else {}
        opt = OptimizerConfig(name, lr, extra=extra).build(groups)
        train_steps(opt, net, x, y, 6 if name == "schedule_free_radam" else 3)
        moved = sum((p.detach() - b).abs().sum() for p, b in zip(net[2].parameters(), before))
        return opt, float(moved)

    if name in ONE_RATE:
        with pytest.raises(ValueError, match=rf"{name} \(.*\) takes one learning rate for every part"):
            first_step(lr / 2)
        return
    opt, half = first_step(lr / 2)
    _, full = first_step(None)
    rates = effective_lrs(opt)
    assert rates[-1] == pytest.approx(rates[0] / 2), rates  # reported: d * lr for the adaptive ones
    if OPTIMIZERS[name].adaptive:
        assert rates[0] != lr  # d * lr, not lr
    assert full > 0 and half == pytest.approx(full / 2, rel=0.15), (half, full)


def test_adaptive_optimizers_report_d_times_lr():
    if not available("prodigy"):
        pytest.skip("prodigyopt missing")
    net, x, y = tiny_net()
    opt = OptimizerConfig("prodigy", 1.0).build(list(net.parameters()))
    train_steps(opt, net, x, y, 3)
    d = opt.param_groups[0]["d"]
    assert d != 1.0 and effective_lrs(opt) == [pytest.approx(d)]


def test_kernel_choices(runner):
    net, _, _ = tiny_net()
    spec = OptimizerConfig("adamw", 1e-3)
    assert spec.build(list(net.parameters())).param_groups[0]["fused"] is True  # auto, on a CPU
    assert spec.build(list(net.parameters()), kernel="foreach").param_groups[0]["foreach"] is True
    loop = spec.build(list(net.parameters()), kernel="for-loop").param_groups[0]
    assert loop["foreach"] is False and not loop["fused"]
    assert OptimizerConfig("sgd", 1e-3).build(list(net.parameters()), kernel="fused").param_groups[0]["fused"]
    with pytest.raises(ValueError, match="optimizer 'adafactor' has no 'fused' kernel"):
        OptimizerConfig("adafactor", 1e-3).build(list(net.parameters()), kernel="fused")
    with pytest.raises(ValueError, match="unknown kernel 'fast'"):
        spec.build(list(net.parameters()), kernel="fast")
    if available("schedule_free_adamw"):
        sf = OptimizerConfig("schedule_free_adamw", 1e-3).build(list(net.parameters()), kernel="for-loop")
        assert sf.param_groups[0]["foreach"] is False


def test_saved_graphs_keep_their_meaning(runner):
    """The node's first params work as before: unset, adamw/adam/sgd get what the node always gave."""
    spec = runner.run(Optimizer, name="adamw")["optimizer"]
    assert (spec.lr, spec.weight_decay, spec.betas, spec.eps) == (1e-4, 0.01, (0.9, 0.999), 1e-8)
    spec = runner.run(Optimizer, name="adam", beta2=0.99, eps=1e-7)["optimizer"]
    assert (spec.weight_decay, spec.betas, spec.eps) == (0.01, (0.9, 0.99), 1e-7)
    spec = runner.run(Optimizer, name="sgd", momentum=0.5)["optimizer"]
    assert (spec.weight_decay, spec.momentum) == (0.01, 0.5)
    opt = OptimizerConfig("adamw", 1e-3).build([torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["weight_decay"] == 0.0  # the Python API's default, as before


def check(name="adamw", **params):
    node = Optimizer()
    params["name"] = name
    for key, p in Optimizer.__node_spec__.params.items():
        setattr(node, key, params.get(key, p.default))
    c = CheckContext("opt", {}, for_run=True)
    node.check(c)
    return [(p.severity, p.message, p.field) for p in c.problems]


def test_check_warns_of_settings_the_optimizer_ignores_and_of_a_small_lr_for_adaptive_ones():
    assert check("adamw", beta1=0.8) == []
    [(severity, message, where)] = check("adamw", momentum=0.9)
    assert severity == "warning" and "momentum is not read by adamw" in message and where == "param 'momentum'"
    problems = check("prodigy", lr=1e-4)
    assert any("use lr near 1.0" in m for _, m, _ in problems)


@pytest.mark.parametrize("name", [n for n in NAMES if OPTIMIZERS[n].package])
def test_a_missing_package_is_one_line_naming_the_pip_command(runner, monkeypatch, name):
    entry = OPTIMIZERS[name]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == entry.package else real(n, *a))
    why = missing_package(name)
    assert why and "\n" not in why and f"pip install {entry.pip}" in why and f"'{entry.package}'" in why
    [(severity, message, where)] = [p for p in check(name, lr=1.0) if p[0] == "error"]
    assert message == why and where == "param 'name'"
    with pytest.raises(RuntimeError, match=f"needs the '{entry.package}' package"):
        runner.run(Optimizer, name=name)
    with pytest.raises(ImportError, match=f"pip install {entry.pip}"):
        OptimizerConfig(name, 1.0).build([torch.nn.Parameter(torch.zeros(2))])


def test_every_setting_is_a_described_optional_param():
    spec = Optimizer.__node_spec__
    assert list(spec.params)[:2] == ["name", "lr"]
    assert spec.params["name"].kind.options == NAMES
    for setting in SETTINGS:
        p = spec.params[setting]
        assert p.optional and p.default is None and "unset: the optimizer's default" in p.doc
    assert "prodigy" in spec.params["d_coef"].doc and "adamw" not in spec.params["d_coef"].doc
    assert "every optimizer" in spec.params["weight_decay"].doc


def test_unknown_names_and_settings_are_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        OptimizerConfig("adamx", 1e-3).build([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="unknown setting"):
        OptimizerConfig("adamw", 1e-3, extra={"betaa": 1}).build([torch.nn.Parameter(torch.zeros(2))])


def test_the_docs_list_every_optimizer_and_schedule():
    from pathlib import Path

    from nodes.train.lr_schedule import SCHEDULES

    text = (Path(__file__).resolve().parents[2] / "docs" / "optimizers.md").read_text()
    assert [n for n in NAMES if f"| `{n}` |" not in text] == []
    assert [n for n in SCHEDULES if f"`{n}`" not in text] == []
