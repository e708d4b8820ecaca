"""train.loop stop_parts (OneTrainer's stop_training_after): parsing the entries, the per-group LR factor
that drops to 0 at a part's stop, a tiny SD fine-tune whose text encoder stops after one update (also
through a backup and a resume), and validation locating a bad entry at train.loop / stop_parts."""

from __future__ import annotations

import json

import pytest
import torch

from nodes.train import part_stops
from nodes.train.lr_schedule import LRScheduleConfig

# -- parse and stop_steps ---------------------------------------------------------------


def test_parse_reads_epochs_and_steps_singular_plural_and_spaces():
    stops = part_stops.parse(["text_encoder=30 epochs", "  unet = 2 steps ", "prior=1 epoch", "text_encoder_2=7step"])
    assert stops == {"text_encoder": (30, "epochs"), "unet": (2, "steps"), "prior": (1, "epochs"),
                     "text_encoder_2": (7, "steps")}
    assert part_stops.parse([]) == {} and part_stops.parse(None) == {}


@pytest.mark.parametrize("entry", ["text_encoder 30 epochs", "unet=3 weeks", "unet=-1 steps", "unet=steps",
                                   "=3 steps", "unet=1.5 epochs"])
def test_parse_refuses_a_malformed_entry_and_names_it(entry):
    with pytest.raises(ValueError) as info:
        part_stops.parse(["text_encoder=1 steps", entry])
    message = str(info.value)
    assert message.startswith("train.loop: stop_parts entry ") and repr(entry) in message
    assert "'part=N epochs' or 'part=N steps'" in message


def test_parse_refuses_a_part_named_twice_and_names_the_node():
    with pytest.raises(ValueError, match=r"^train: stop_parts names 'unet' twice$"):
        part_stops.parse(["unet=1 steps", "text_encoder=2 epochs", "unet=3 epochs"], node="train")


def test_stop_steps_counts_epochs_in_updates_and_refuses_a_part_that_does_not_train():
    stops = part_stops.parse(["text_encoder=3 epochs", "unet=5 steps"])
    for per_epoch in (1, 4, 7):
        assert part_stops.stop_steps(stops, per_epoch, {"unet": 0, "text_encoder": 0}) == {
            "text_encoder": 3 * per_epoch, "unet": 5}
    with pytest.raises(ValueError) as info:
        part_stops.stop_steps(stops, 4, ["unet"])
    assert str(info.value) == ("train.loop: stop_parts names text_encoder, which the model does not train "
                               "(trained parts: unet)")
    with pytest.raises(ValueError, match=r"names prior, text_encoder, .*\(trained parts: none\)"):
        part_stops.stop_steps(part_stops.parse(["text_encoder=1 steps", "prior=2 steps"]), 1, [])


def test_group_limits_follow_the_optimizer_groups_by_name():
    groups = [{"name": "unet", "params": []}, {"params": []}, {"name": "text_encoder", "params": []}]
    assert part_stops.group_limits(groups, {"text_encoder": 6}) == [None, None, 6]


# -- the schedule -----------------------------------------------------------------------


def two_groups(lr0=0.1, lr1=0.04):
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([{"params": [a], "lr": lr0}, {"params": [b], "lr": lr1}], lr=1.0)


def lrs_over(scheduler, optimizer, updates):
    seen = []
    for _ in range(updates):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("config", [LRScheduleConfig("cosine", warmup=1), LRScheduleConfig("linear"),
                                    LRScheduleConfig("constant", warmup=0.5)])
def test_a_stopped_group_has_lr_zero_from_its_stop_the_others_follow_the_schedule(config):
    total, stop = 6, 2
    stopped_opt, plain_opt = two_groups(), two_groups()
    stopped = lrs_over(config.build(stopped_opt, total, [stop, None]), stopped_opt, total)
    plain = lrs_over(config.build(plain_opt, total), plain_opt, total)
    for update in range(total):
        assert stopped[update][1] == plain[update][1]  # the other group: the normal schedule
        if update < stop:
            assert stopped[update][0] == pytest.approx(0.1 * config.factor(update, total), rel=1e-12)
            assert stopped[update][0] == plain[update][0]
        else:
            assert stopped[update][0] == 0.0
    assert any(lr[0] > 0 for lr in stopped[:stop]) and any(lr[1] > 0 for lr in stopped[stop:])


def test_no_stops_build_the_plain_schedule_and_adafactor_refuses_stops():
    config = LRScheduleConfig("linear")
    with_none, plain = two_groups(), two_groups()
    assert lrs_over(config.build(with_none, 4, [None, None]), with_none, 4) == lrs_over(config.build(plain, 4),
                                                                                        plain, 4)
    with pytest.raises(ValueError, match="stop_parts needs a learning-rate schedule; the adafactor schedule"):
        LRScheduleConfig("adafactor").build(two_groups(), 4, [2, None])


# -- a tiny SD fine-tune ------------------------------------------------------------------


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def finetune_run(runner, steps, hooks=(), **params):
    """sd.finetune_setup (UNet and text encoder) on the tiny model (seed 0), trained ``steps`` updates
    with AdamW (weight decay on) at a high LR; returns the trained model."""
    from nodes.sd.build import build_tiny
    from nodes.sd.finetune import FinetuneSetup
    from nodes.train.loop import TrainLoop
    from tests.sd.conftest import TokenBatches
    from tests.train.helpers import train_inputs

    base = build_tiny(seed=0)
    model = runner.run(FinetuneSetup, "ft", {"model": base}, train_text_encoder=True)["adapted"]
    inputs = train_inputs(model, TokenBatches(base), lr=0.02, hooks=hooks)
    return runner.run(TrainLoop, "train", inputs, max_steps=steps, device="cpu", seed=3, **params)["trained"]


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """The reference: the same fine-tune, 1 update, no stops."""
    from tests.train.helpers import NodeRunner

    trained = finetune_run(NodeRunner(tmp_path_factory.mktemp("one")), 1)
    return {"unet": snapshot(trained.unet), "text_encoder": snapshot(trained.text_encoder)}


def test_a_stopped_text_encoder_keeps_its_weights_from_the_stop_on(runner, one_step):
    trained = finetune_run(runner, 3, stop_parts=["text_encoder=1 steps"])
    assert [e["step"] for e in runner.events("progress", "train")] == [1, 2, 3]
    assert same(snapshot(trained.text_encoder), one_step["text_encoder"])  # updates 2 and 3 left it alone
    assert not same(snapshot(trained.unet), one_step["unet"])  # the UNet trained on


def test_the_stop_counts_epochs_of_updates(tmp_path, one_step):
    from tests.train.helpers import NodeRunner

    # TokenBatches(n=4) is 2 batches: 1 epoch is 2 updates
    trained = finetune_run(NodeRunner(tmp_path / "a"), 3, stop_parts=["text_encoder=1 epoch"])
    two = finetune_run(NodeRunner(tmp_path / "b"), 2)
    assert same(snapshot(trained.text_encoder), snapshot(two.text_encoder))
    assert not same(snapshot(trained.text_encoder), one_step["text_encoder"])


def test_a_part_the_model_does_not_train_fails_the_run_naming_it(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.finetune import FinetuneSetup
    from nodes.train.loop import TrainLoop
    from tests.sd.conftest import TokenBatches
    from tests.train.helpers import train_inputs

    base = build_tiny(seed=0)
    model = runner.run(FinetuneSetup, "ft", {"model": base})["adapted"]  # the UNet alone
    with pytest.raises(ValueError, match=r"stop_parts names text_encoder, which the model does not train "
                                         r"\(trained parts: unet\)"):
        runner.run(TrainLoop, "train", train_inputs(model, TokenBatches(base)), max_steps=2, device="cpu",
                   stop_parts=["text_encoder=1 steps"])


def test_a_resumed_run_keeps_the_stop(tmp_path, one_step):
    """4 updates with the text encoder stopped after 1, backed up at 2: the resumed run ends where the
    straight one does, and its text encoder never moved past update 1."""
    from nodes.train.hook_nodes import Backups
    from tests.train.helpers import NodeRunner

    stop = ["text_encoder=1 steps"]
    r1 = NodeRunner(tmp_path / "run1")
    backups = r1.run(Backups, "backups", {}, every=2, keep=5)["hook"]
    straight = finetune_run(r1, 4, [backups], stop_parts=stop)
    backup = tmp_path / "run1" / "backups" / "step-000002"
    assert json.loads((backup / "meta.json").read_text())["step"] == 2

    torch.manual_seed(1234)  # the resumed run must not depend on the global RNG it starts with
    r2 = NodeRunner(tmp_path / "run2")
    r2.resume = backup
    resumed = finetune_run(r2, 4, [r2.run(Backups, "backups", {}, every=2, keep=5)["hook"]], stop_parts=stop)
    assert [e["step"] for e in r2.events("progress", "train")] == [3, 4]
    assert same(snapshot(resumed.text_encoder), one_step["text_encoder"])
    assert same(snapshot(straight.text_encoder), one_step["text_encoder"])
    a, b = snapshot(straight.unet), snapshot(resumed.unet)
    assert a.keys() == b.keys() and not same(b, one_step["unet"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("entries, named", [
    (["unet=2 steps", "text_encoder 3 epochs"], "'text_encoder 3 epochs'"),
    (["unet=2 fortnights"], "'unet=2 fortnights'"),
    (["unet=2 steps", "unet=3 epochs"], "'unet' twice"),
])
def test_validation_locates_a_bad_entry_at_train_loop_stop_parts(registry, entries, named):
    from runtime.graph_file import load_graph
    from runtime.paths import GRAPHS_DIR
    from runtime.validate import validate

    graph = load_graph(GRAPHS_DIR / "quickstart.yaml", registry)
    assert validate(graph, registry, ["train.stop_parts=[unet=2 steps]"]).ok
    graph.nodes["train"].params["stop_parts"] = entries
    [problem] = validate(graph, registry).errors
    assert (problem.node, problem.field, problem.code) == ("train", "param 'stop_parts'", "check")
    assert named in problem.message and not problem.message.startswith("train.loop:")
