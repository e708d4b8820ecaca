"""train.loop on a toy model: steps, epochs, accumulation, clipping, precision, seeds, stop, hooks, errors."""

from __future__ import annotations

import pytest
import torch

from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop, check_precision
from nodes.train.lr_schedule import LRScheduleConfig
from nodes.train.objective import DiffusionObjective
from tests.train.helpers import ListBatches, make_toy, train_inputs


def weights(model):
    return [p.detach().clone() for p in model.net.parameters()]


def test_trains_for_max_steps_and_reports_progress(runner, toy):
    before = weights(toy)
    out = runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(n=8, batch_size=2)), max_steps=6, device="cpu")
    assert out["trained"] is toy
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(toy)))
    progress = runner.events("progress", "train")
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5, 6]
    assert {e["total"] for e in progress} == {6}
    assert [e["epoch"] for e in progress] == [1, 1, 1, 1, 2, 2]  # 4 batches per epoch
    for e in progress:
        for key in ("loss", "smoothed_loss", "lr", "it_s", "step_time"):
            assert isinstance(e[key], float) and e[key] >= 0, (key, e)
    assert "eta" in progress[-1] and progress[-1]["eta"] == 0
    assert toy.progress == {"step": 6, "epoch": 1}
    assert all(not p.requires_grad or not toy.net.training for p in toy.net.parameters())


def test_epochs_mode_runs_every_batch_of_every_epoch(runner, toy):
    batches = ListBatches(n=6, batch_size=2)
    runner.run(TrainLoop, "train", train_inputs(toy, batches), epochs=2, device="cpu")
    assert [e["step"] for e in runner.events("progress")][-1] == 6
    assert batches.epochs_started == [(0, 0), (1, 0)]


def test_gradient_accumulation_counts_updates_not_batches(runner, toy):
    batches = ListBatches(n=8, batch_size=2)
    runner.run(TrainLoop, "train", train_inputs(toy, batches), epochs=2, gradient_accumulation=2, device="cpu")
    assert [e["step"] for e in runner.events("progress")] == [1, 2, 3, 4]


def test_accumulating_two_halves_equals_one_full_batch(runner):
    """Loss / accum with two batches of 2 gives the same update as one batch of 4 (same noise order)."""

    class FixedNoise(DiffusionObjective):
        def sample_noise(self, x0, generator):
            return torch.ones_like(x0)

        def sample_timesteps(self, n, scheduler, generator, device):
            return torch.full((n,), 500, dtype=torch.long)

    a, b = make_toy(), make_toy()
    obj = FixedNoise()
    runner.run(TrainLoop, "a", train_inputs(a, ListBatches(n=4, batch_size=4), optimizer="sgd", objective=obj),
               max_steps=1, max_grad_norm=0.0, device="cpu")
    runner.run(TrainLoop, "b", train_inputs(b, ListBatches(n=4, batch_size=2), optimizer="sgd", objective=obj),
               max_steps=1, gradient_accumulation=2, max_grad_norm=0.0, device="cpu")
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        torch.testing.assert_close(pa, pb)


def test_gradient_clipping_bounds_the_update(runner):
    clipped, free = make_toy(), make_toy()
    start = weights(clipped)
    lr = 0.1
    runner.run(TrainLoop, "c", train_inputs(clipped, ListBatches(), lr=lr, optimizer="sgd"), max_steps=1,
               max_grad_norm=1e-4, device="cpu")
    runner.run(TrainLoop, "f", train_inputs(free, ListBatches(), lr=lr, optimizer="sgd"), max_steps=1,
               max_grad_norm=0.0, device="cpu")
    def norm(m):
        return torch.sqrt(sum(((p - s) ** 2).sum() for p, s in zip(m.net.parameters(), start))).item()
    assert norm(clipped) <= lr * 1e-4 * 1.01
    assert norm(free) > 100 * norm(clipped)


def test_same_seed_same_weights_other_seed_or_node_other_weights(runner):
    runs = {}
    for name, node_id, seed in (("a", "train", 1), ("b", "train", 1), ("c", "train", 2), ("d", "other", 1)):
        m = make_toy()
        runner.run(TrainLoop, node_id, train_inputs(m, ListBatches()), max_steps=3, seed=seed, device="cpu")
        runs[name] = weights(m)
    assert all(torch.equal(x, y) for x, y in zip(runs["a"], runs["b"]))
    assert not all(torch.equal(x, y) for x, y in zip(runs["a"], runs["c"]))
    # the noise is seeded by the seed and the node id: two loops with one seed draw differently
    assert not all(torch.equal(x, y) for x, y in zip(runs["a"], runs["d"]))


@pytest.mark.parametrize("precision,device", [
    ("bf16", "cpu"), ("fp16", "cpu"),
    pytest.param("fp16", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
    pytest.param("bf16", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))])
def test_mixed_precision_trains(runner, toy, precision, device):
    before = weights(toy)
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=2, precision=precision, device=device)
    losses = [e["loss"] for e in runner.events("progress")]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(before, weights(toy)))


def test_half_weights_must_match_the_precision(runner, toy):
    toy.net.to(torch.bfloat16)
    with pytest.raises(ValueError, match="the net weights are bfloat16 but precision is fp32"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, precision="fp32", device="cpu")
    toy.net.to(torch.float16)
    with pytest.raises(ValueError, match="the net weights are float16 but precision is bf16"):
        check_precision(toy, "bf16")  # what a GPU run checks; on a CPU the loop makes float16 weights float32


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_on_a_cpu_float16_trains_in_float32_and_says_so(runner, toy, precision):
    """fp16 autocast and float16 weights run several times slower than float32 on a CPU: the loop trains
    in fp32 there, makes the float16 weights float32, and warns about each."""
    toy.net.to(torch.float16)
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=2, precision=precision, device="cpu")
    warnings = [e["message"] for e in runner.events("log") if e["level"] == "warning"]
    assert any("the net weights are float16: made float32 to train on the CPU" in w for w in warnings)
    assert any("precision fp16 on the CPU: training in fp32" in w for w in warnings) == (precision == "fp16")
    assert {p.dtype for p in toy.net.parameters()} == {torch.float32}
    assert any("weights on cpu (fp32)" in e["message"] for e in runner.events("log"))
    assert all(e["loss"] == e["loss"] for e in runner.events("progress"))


def test_lr_schedule_is_stepped_per_update(runner, toy):
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(), lr=1.0, schedule=LRScheduleConfig("linear")),
               max_steps=4, device="cpu")
    assert [e["lr"] for e in runner.events("progress")] == pytest.approx([0.75, 0.5, 0.25, 0.0])


class Recorder(TrainHook):
    def __init__(self, stop_at: int | None = None):
        self.calls = []
        self.stop_at = stop_at

    def on_start(self, run):
        self.calls.append(("start", run.state.step, run.total_steps))

    def on_step_end(self, run, loss):
        self.calls.append(("step", run.state.step))
        if run.state.step == self.stop_at:
            run.ctx.cancel.request("test stop")

    def on_epoch_end(self, run):
        self.calls.append(("epoch", run.state.epoch))

    def on_command(self, run, command):
        self.calls.append(("command", command["command"]))
        return command["command"] == "sample"

    def on_end(self, run, stopped):
        self.calls.append(("end", run.state.step, stopped))


def test_hooks_see_start_steps_epochs_and_end(runner, toy):
    hook = Recorder()
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(n=4), hooks=[hook]), epochs=2, device="cpu")
    assert hook.calls == [("start", 0, 4), ("step", 1), ("step", 2), ("epoch", 1), ("step", 3), ("step", 4),
                          ("end", 4, False)]


def test_stop_finishes_the_step_then_returns(runner, toy):
    hook = Recorder(stop_at=3)
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(n=8), hooks=[hook]), max_steps=50, device="cpu")
    assert [e["step"] for e in runner.events("progress")] == [1, 2, 3]
    assert hook.calls[-1] == ("end", 3, True)
    assert toy.progress["step"] == 3


def test_commands_go_to_hooks_and_unhandled_ones_warn(runner, toy):
    hook = Recorder()
    runner.inbox.put({"command": "sample"})
    runner.inbox.put({"command": "save"})
    runner.inbox.put({"command": "backup"})
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(), hooks=[hook]), max_steps=1, device="cpu")
    assert ("command", "sample") in hook.calls and ("command", "save") in hook.calls
    assert ("command", "backup") not in hook.calls, "the loop itself writes backups"
    assert (runner.workspace / "backups" / "step-000001" / "meta.json").exists()
    warnings = [e["message"] for e in runner.events("log") if e["level"] == "warning"]
    assert any("'save'" in w for w in warnings) and not any("'sample'" in w for w in warnings)


def test_loss_weight_field_scales_the_loss(runner):
    class ZeroNoise(DiffusionObjective):
        def sample_timesteps(self, n, scheduler, generator, device):
            return torch.full((n,), 300, dtype=torch.long)

    losses = {}
    for w in (1.0, 3.0):
        m = make_toy()
        b = ListBatches(n=2, batch_size=2, extra={"loss_weight": torch.full((2,), w)})
        runner.run(TrainLoop, "train", train_inputs(m, b, lr=0.0, objective=ZeroNoise()), max_steps=1, device="cpu")
        losses[w] = runner.events("progress", "train")[-1]["loss"]  # same node id: the same noise
    assert losses[3.0] == pytest.approx(3 * losses[1.0], rel=1e-4)


def test_nan_loss_stops_with_a_clear_error(runner, toy):
    with torch.no_grad():
        next(toy.net.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=2, device="cpu")


def test_model_without_trainable_weights_is_refused(runner, toy):
    toy.net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable weights.*setup node"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, device="cpu")


def test_missing_batch_field_names_the_field_and_the_wiring(runner, toy):
    class NoLatent(ListBatches):
        def epoch(self, epoch, start=0):
            for batch in super().epoch(epoch, start):
                yield {"image": batch["latent"], "_index": batch["_index"]}

    with pytest.raises(ValueError, match=r"no field 'latent' \(they have: image\); connect"):
        runner.run(TrainLoop, "train", train_inputs(toy, NoLatent()), max_steps=1, device="cpu")


def test_missing_cuda_device_is_a_clear_error(runner, toy):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="'cuda' was chosen but torch sees no CUDA GPU"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, device="cuda")


def test_gradient_checkpointing_needs_support_from_the_model(runner, toy):
    with pytest.raises(ValueError, match="part 'net' does not support gradient checkpointing"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, gradient_checkpointing=True,
                   device="cpu")


def test_state_round_trips_through_a_weights_only_checkpoint(runner, toy, tmp_path):
    """The loop's state object is what backups will save; it must survive torch.save / weights_only load."""
    from nodes.train.optimizer import OptimizerConfig
    from nodes.train.state import TrainState

    state = TrainState(seed=3, step=5, epoch=1, epoch_batch=2, smoothed_loss=0.5)
    state.optimizer = OptimizerConfig("adamw", 1e-3).build(list(toy.net.parameters()))
    state.lr_scheduler = LRScheduleConfig("cosine", warmup=2).build(state.optimizer, 10)
    state.generator = torch.Generator().manual_seed(9)
    state.scaler = torch.amp.GradScaler("cpu", enabled=False)
    toy.net(torch.randn(1, 4, 2, 2)).sum().backward()
    state.optimizer.step()
    state.lr_scheduler.step()
    path = tmp_path / "state.pt"
    torch.save(state.state_dict(), path)
    expected_noise = torch.randn(3, generator=state.generator)

    other = TrainState(seed=0)
    other.optimizer = OptimizerConfig("adamw", 1e-3).build(list(toy.net.parameters()))
    other.lr_scheduler = LRScheduleConfig("cosine", warmup=2).build(other.optimizer, 10)
    other.generator = torch.Generator()
    other.scaler = torch.amp.GradScaler("cpu", enabled=False)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.counters() == state.counters()
    assert other.lr_scheduler.get_last_lr() == state.lr_scheduler.get_last_lr()
    assert torch.equal(torch.randn(3, generator=other.generator), expected_noise)
