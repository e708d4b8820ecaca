"""train.lr_schedule: each curve against its formula, warmup in steps or as a fraction, the minimum-LR
factor, the old names, Adafactor's relative schedule, and a state that backups can keep."""

from __future__ import annotations

import io
import math

import pytest
import torch

from nodes.train.lr_schedule import SCHEDULES, LRScheduleConfig, LRScheduleNode

PEAK = 0.5


def curve(config: LRScheduleConfig, total: int, optimizer=None) -> list[float]:
    """The LR of each update 0..total (as the loop steps it: update, then schedule)."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = optimizer or torch.optim.SGD([w], lr=PEAK)
    sched = config.build(opt, total)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_node_offers_every_schedule_and_keeps_the_old_names(runner):
    assert LRScheduleNode.__node_spec__.params["name"].kind.options == SCHEDULES
    assert {"constant_with_warmup", "cosine_with_restarts", "rex", "adafactor", "cosine_with_soft_restarts",
            "cosine_with_hard_restarts"} <= set(SCHEDULES)
    spec = runner.run(LRScheduleNode, name="rex", warmup=0.1, min_factor=0.2)["schedule"]
    assert (spec.name, spec.warmup, spec.min_factor) == ("rex", 0.1, 0.2)


@pytest.mark.parametrize("name,formula", [
    ("constant", lambda p: 1.0),
    ("linear", lambda p: 1 - p),
    ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    ("polynomial", lambda p: (1 - p) ** 2),
    ("rex", lambda p: (1 - p) / (0.1 + 0.9 * (1 - p))),
    ("cosine_with_hard_restarts", lambda p: 0.0 if p >= 1 else 0.5 * (1 + math.cos(math.pi * ((3 * p) % 1)))),
    ("cosine_with_soft_restarts", lambda p: max(0.0, 0.5 * (1 + math.cos(7 * math.pi * p)))),
])
@pytest.mark.parametrize("min_factor", [0.0, 0.25])
def test_each_curve_follows_its_formula_after_warmup(name, formula, min_factor):
    total, warmup = 40, 8
    lrs = curve(LRScheduleConfig(name, warmup=warmup, cycles=3, power=2.0, min_factor=min_factor), total)
    assert lrs[:warmup] == pytest.approx([PEAK * s / warmup for s in range(warmup)])
    for step in (8, 13, 20, 27, 33, 39, 40):
        p = (step - warmup) / (total - warmup)
        want = PEAK * (min_factor + (1 - min_factor) * formula(p))
        assert lrs[step] == pytest.approx(want, abs=1e-9), (name, step)
    assert min(lrs[warmup:]) >= PEAK * min_factor - 1e-12


def test_hard_restarts_jump_back_to_the_peak_and_soft_ones_rise_smoothly():
    total = 30
    hard = curve(LRScheduleConfig("cosine_with_hard_restarts", cycles=3), total)
    soft = curve(LRScheduleConfig("cosine_with_soft_restarts", cycles=1), total)
    assert hard[9] < 0.05 * PEAK and hard[10] == pytest.approx(PEAK)  # a cycle ends, the next starts at the peak
    assert max(abs(a - b) for a, b in zip(soft, soft[1:])) < 0.3 * PEAK  # no jump
    assert soft[10] == pytest.approx(0.0, abs=1e-9) and soft[20] == pytest.approx(PEAK)  # down, back up, down
    assert soft[30] == pytest.approx(0.0, abs=1e-9)


def test_old_names_are_the_same_curves():
    for old, new in (("cosine_with_restarts", "cosine_with_hard_restarts"), ("constant_with_warmup", "constant")):
        assert curve(LRScheduleConfig(old, warmup=3, cycles=2), 20) == curve(LRScheduleConfig(new, warmup=3, cycles=2),
                                                                          20)


@pytest.mark.parametrize("name,kwargs", [("linear", {}), ("cosine", {}), ("cosine_with_restarts", {"num_cycles": 3}),
                                         ("constant_with_warmup", {})])
def test_the_curves_this_node_had_are_still_diffusers_ones(name, kwargs):
    from diffusers.optimization import get_scheduler

    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=PEAK)
    sched = get_scheduler(name, opt, num_warmup_steps=4, num_training_steps=20, **kwargs)
    theirs = []
    for _ in range(20):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = curve(LRScheduleConfig(name, warmup=4, cycles=kwargs.get("num_cycles", 1)), 20)[:20]
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_warmup_in_steps_or_as_a_fraction():
    assert LRScheduleConfig("linear", warmup=5).warmup_steps(100) == 5
    assert LRScheduleConfig("linear", warmup=0.25).warmup_steps(100) == 25
    lrs = curve(LRScheduleConfig("constant", warmup=0.25), 8)
    assert lrs[:3] == pytest.approx([0, PEAK / 2, PEAK]) and lrs[-1] == PEAK


def test_per_part_rates_follow_the_same_factor():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = LRScheduleConfig("linear", min_factor=0.5).build(opt, 10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])


def test_the_schedule_state_resumes_and_loads_with_weights_only():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=PEAK)
    config = LRScheduleConfig("rex", warmup=2, min_factor=0.1)
    sched = config.build(opt, 20)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    w2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([w2], lr=PEAK)
    again = config.build(opt2, 20)
    again.load_state_dict(state)
    for _ in range(5):
        for o, s in ((opt, sched), (opt2, again)):
            o.step()
            s.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(
        PEAK * config.factor(12, 20))


def adafactor(relative_step: bool):
    from nodes.train.optimizer import OptimizerConfig

    w = torch.nn.Parameter(torch.ones(4, 4))
    return w, OptimizerConfig("adafactor", 1e-3, extra={"relative_step": relative_step}).build([w])


def test_adafactor_schedule_reports_adafactors_own_step_size():
    w, opt = adafactor(relative_step=True)
    sched = LRScheduleConfig("adafactor").build(opt, 10)
    reported = []
    for step in range(1, 6):
        (w ** 2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=False)
        reported.append(sched.get_last_lr()[0])
        assert reported[-1] == pytest.approx(min(1e-2, 1 / math.sqrt(step)))  # Adafactor's relative step


def test_adafactor_schedule_needs_adafactor_with_relative_step():
    with pytest.raises(ValueError, match="adafactor schedule works only with the adafactor optimizer .*SGD"):
        curve(LRScheduleConfig("adafactor"), 5)
    _, opt = adafactor(relative_step=False)
    with pytest.raises(ValueError, match="set train.optimizer relative_step: true"):
        LRScheduleConfig("adafactor").build(opt, 5)


def test_unknown_schedule_fails_when_built():
    with pytest.raises(ValueError, match="unknown schedule 'cosinus'"):
        curve(LRScheduleConfig("cosinus"), 5)


def test_pairing_problems_for_train_loops_check():
    from nodes.train.lr_schedule import pairing_problems

    assert pairing_problems({"name": "adamw"}, {"name": "cosine", "warmup": 10}) == []
    [(severity, message)] = pairing_problems({"name": "adamw"}, {"name": "adafactor"})
    assert severity == "error" and "needs the adafactor optimizer" in message and "is adamw" in message
    assert pairing_problems({"name": "adafactor", "relative_step": True}, {"name": "adafactor"}) == []
    assert pairing_problems({"name": "adafactor"}, {"name": "adafactor"})[0][0] == "error"
    [(severity, message)] = pairing_problems({"name": "schedule_free_adamw"}, {"name": "cosine"})
    assert severity == "warning" and "schedule-free" in message
    assert pairing_problems({"name": "schedule_free_sgd"}, {"name": "constant_with_warmup", "warmup": 0}) == []
    assert pairing_problems({"name": "schedule_free_sgd"}, {"name": "constant", "warmup": 5})[0][0] == "warning"
    assert pairing_problems({"name": "prodigy_plus_schedule_free", "use_schedulefree": False},
                            {"name": "cosine"}) == []
