"""Scheduled hook nodes of train.loop: backups, periodic saves, sample previews, validation loss."""

from __future__ import annotations

import contextlib

from runtime import Input, Output, Param, node
from runtime.port_types import BatchSource, Hook, Objective, Sampler, Saver

from .backup import report_save_errors
from .hooks import TrainHook, part_modes
from .schedule import ScheduleParams


class BackupHook(TrainHook):
    def __init__(self, key, schedule, keep: int):
        self.key, self.schedule, self.keep = key, schedule, keep

    def on_start(self, run) -> None:
        super().on_start(run)
        run.backup_keep = self.keep

    def fire(self, run, reason: str) -> None:
        run.request_backup(reason)  # under DDP every rank writes it after this step


@node("train.backup_hook", title="Backups", category="Hooks")
class Backups(ScheduleParams):
    """Write a backup (trainable weights, optimizer, scheduler, EMA, data position, RNGs) on a schedule and
    keep the newest few. ``nodetrainer run GRAPH --resume last`` continues from the newest. A stop
    (Ctrl-C, SIGTERM, the stop command) and the backup command write one too, with or without this node."""

    hook = Output(Hook, doc="connect to train.loop's hooks")
    every = Param(int, 500, min=0, doc="how often: every this many units (0 = only on stop and command)")
    keep = Param(int, 3, min=1, doc="backups to keep; older ones are deleted")

    def run(self, ctx):
        return {"hook": BackupHook(ctx.node_id, self.schedule(), self.keep)}


class SaveHook(TrainHook):
    command = "save"

    def __init__(self, key, schedule, savers: list, at_end: bool):
        self.key, self.schedule, self.savers, self.at_end = key, schedule, savers, at_end

    def fire(self, run, reason: str) -> None:
        step = run.state.step if reason != "end" else None
        with run.inference_weights(), run.averaged_weights():
            for saver in self.savers:
                what = f"saving {saver.format or 'the model'} at step {run.state.step}"
                with report_save_errors(run.ctx, what, run.save_failures):
                    saver.save(run.ctx, run.model, step=step)

    def on_end(self, run, stopped: bool) -> None:
        if self.at_end and not stopped:
            self.trigger(run, "end")


@node("train.save_hook", title="Periodic save", category="Hooks", commands=("save",))
class PeriodicSave(ScheduleParams):
    """Save the model during training with the connected savers (any format): files get ``-step000123``
    in their names. Uses the EMA weights when an EMA hook is connected, a schedule-free optimizer's
    averaged weights otherwise. The save command saves now.
    A failed save (a full disk, any writer's error) is reported and training goes on; a failed save at
    the end writes a backup to resume from and fails the run."""

    savers = Input(Saver, multi=True, doc="saver nodes' `saver` outputs (sd.save_lora, sdxl.save_checkpoint, ...)")
    hook = Output(Hook, serves="savers", doc="connect to train.loop's hooks (for the models its savers write)")
    every = Param(int, 500, min=0, doc="how often: every this many units (0 = only on command)")
    at_end = Param(bool, False, doc="also save when training ends (file names without a step)")

    def run(self, ctx, savers):
        return {"hook": SaveHook(ctx.node_id, self.schedule(), list(savers), self.at_end)}


class SampleHook(TrainHook):
    command = "sample"

    def __init__(self, key, schedule, samplers: list, non_ema: bool):
        self.key, self.schedule, self.samplers, self.non_ema = key, schedule, samplers, non_ema

    def fire(self, run, reason: str) -> None:
        step = run.state.step
        live = ("", contextlib.nullcontext)
        if run.ema is None:
            variants = [live]
        else:
            variants = ([live] if self.non_ema else []) + [("ema", run.averaged_weights)]
        with part_modes(run.model), run.inference_weights():
            for tag, weights in variants:
                with weights():
                    for sampler in self.samplers:
                        what = f"sample previews{' (' + tag + ')' if tag else ''} at step {step}"
                        with report_save_errors(run.ctx, what, run.save_failures):
                            paths = sampler.sample(run.ctx, run.model, step=step, tag=tag)
                            run.samples.append((step, tag, [str(p) for p in paths]))


@node("train.sample_hook", title="Sample previews", category="Hooks", commands=("sample",))
class SamplePreviews(ScheduleParams):
    """Make preview images during training with the connected samplers' settings (prompts, seed,
    steps, CFG, size). With an EMA hook connected, samples with the EMA weights too. The sample
    command samples now. A sampler that fails is reported and training goes on."""

    samplers = Input(Sampler, multi=True, doc="sampler nodes' `sampler` outputs (sd.sample, sdxl.sample)")
    hook = Output(Hook, serves="samplers", doc="connect to train.loop's hooks (for the models its samplers take)")
    every = Param(int, 250, min=0, doc="how often: every this many units (0 = only on command)")
    non_ema = Param(bool, True, doc="with an EMA hook: also sample the live (non-EMA) weights")

    def run(self, ctx, samplers):
        return {"hook": SampleHook(ctx.node_id, self.schedule(), list(samplers), self.non_ema)}


class ValidationHook(TrainHook):
    def __init__(self, key, schedule, batches, objective, max_batches: int, seed: int):
        self.key, self.schedule, self.batches, self.objective = key, schedule, batches, objective
        self.max_batches, self.seed = max_batches, seed

    def fire(self, run, reason: str) -> None:
        import torch

        objective = self.objective or run.objective
        generator = torch.Generator().manual_seed(self.seed)  # same noise every time: losses compare
        total, count = 0.0, 0
        with part_modes(run.model), run.inference_weights(), torch.no_grad():
            for part in run.model.parts().values():
                part.eval()
            # rank 0 alone validates (under torchrun): on every batch, not on its shard of them
            batches = self.batches.for_rank(0, 1) if hasattr(self.batches, "for_rank") else self.batches
            for i, batch in enumerate(batches.epoch(0)):
                if self.max_batches and i >= self.max_batches:
                    break
                loss, _ = objective.loss(run.model, batch, generator)
                total += float(loss)
                count += 1
        if count == 0:
            run.ctx.warn("validation: the validation batches are empty")
            return
        value = total / count
        run.metrics["validation_loss"] = value
        run.ctx.log(f"validation loss {value:.5f} at step {run.state.step} ({count} batches)",
                    validation_loss=value, step=run.state.step)


@node("train.validation_hook", title="Validation loss", category="Hooks")
class ValidationLoss(ScheduleParams):
    """Compute the loss on validation batches (e.g. a separate validation concept through its own data
    graph) with fixed noise, so values are comparable over the run; logged and sent to TensorBoard."""

    batches = Input(BatchSource, doc="validation batches")
    objective = Input(Objective, optional=True, doc="objective to evaluate (default: the training objective)")
    hook = Output(Hook, doc="connect to train.loop's hooks")
    max_batches = Param(int, 0, min=0, doc="evaluate at most this many batches (0 = all)")
    seed = Param(int, 0, min=0, doc="seed of the validation noise and timesteps")

    def run(self, ctx, batches, objective):
        return {"hook": ValidationHook(ctx.node_id, self.schedule(), batches, objective, self.max_batches,
                                       ctx.seed_for(self.seed))}
