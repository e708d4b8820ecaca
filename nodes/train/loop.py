"""``train.loop``: the training loop as a node, readable top to bottom.

forward (objective.loss) -> backward -> every ``gradient_accumulation`` batches:
unscale, clip, optimizer step, LR step -> progress event, hooks, commands -> stop?
The loop knows no model family: the objective computes the loss on (model, batch).
``TrainLoop.run`` sets the run up and ends it; ``Steps`` is the loop, one method per stage.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time

from runtime import Choice, Device, Input, Output, Param, Seed, StrList, node
from runtime.port_types import BatchSource, DiffusionModel, Hook, LRSchedule, Objective, OptimizerSpec

from . import distributed, speed
from .backup import load_backup, report_save_errors, write_backup
from .hooks import TrainRun, call, ordered
from .optimizers import effective_lrs
from .state import TrainState

PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
# Measured for a small conv + linear net's training step on an x86 CPU without bf16/fp16 units
# (21 ms fp32, 128 ms bf16 autocast, 152 ms fp16 autocast): half-precision math is emulated there.
CPU_HALF = "CPUs run float16 math several times slower than float32 (7x for a small conv net's step)"


def resolve_device(name: str):
    """The ``torch.device`` a Device param names (``auto``: CUDA, else Apple MPS, else CPU); a device
    this machine lacks is an error."""
    import torch

    return torch.device(Device.resolve(name))


def check_precision(model, precision: str) -> None:
    """Half-precision weights must match the autocast dtype (mixed float16/bfloat16 ops fail)."""
    import torch

    want = PRECISIONS[precision]
    for name in model.training_parts():
        part = model.parts().get(name)
        dtypes = {p.dtype for p in part.parameters()} if part is not None else set()
        for dtype in dtypes & {torch.float16, torch.bfloat16}:
            have = str(dtype).removeprefix("torch.")
            if want != have:
                raise ValueError(f"the {name} weights are {have} but precision is {precision}: load them as float32 "
                                 f"or {have}, or set precision to {'fp16' if have == 'float16' else 'bf16'}")


def precision_on(ctx, model, device, precision: str) -> str:
    """The precision to train in on ``device``, said in the log when it differs from the param.

    On a CPU float16 is the slow choice: ``fp16`` trains in ``fp32`` there, and float16 weights of the
    parts the loop runs are made float32 (a warning names them). bf16 stays as set (CPUs with bf16
    units run it well). Then half-precision weights must match the precision (``check_precision``)."""
    import torch

    if device.type != "cpu":
        check_precision(model, precision)
        return precision
    if precision == "fp16":
        ctx.warn(f"precision fp16 on the CPU: training in fp32 instead ({CPU_HALF}); "
                 "fp16 is for GPUs, set precision: fp32 to silence this")
        precision = "fp32"
    parts = model.parts()
    half = [name for name in model.training_parts()
            if name in parts and any(p.dtype == torch.float16 for p in parts[name].parameters())]
    for name in half:
        parts[name].to(torch.float32)
    if half:
        ctx.warn(f"the {', '.join(half)} weights are float16: made float32 to train on the CPU ({CPU_HALF}); "
                 "they take twice the memory")
    check_precision(model, precision)
    return precision


def autocast_for(device, precision: str):
    import torch

    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


@node("train.loop", title="Train", category="Training", commands=("stop", "backup"))
class TrainLoop:
    """Train the model on batches from the data graph: gradient accumulation, clipping, mixed precision,
    gradient checkpointing, seeded noise, and hooks (samples, saves, backups, EMA, TensorBoard, validation).
    Emits progress each step. A stop (Ctrl-C, SIGTERM, the stop command) finishes the current step and
    writes a backup; ``nodetrainer run GRAPH --resume last`` continues from it to the same state. A save
    that fails during training is reported and training goes on; a stop whose backup cannot be written,
    or a save at the end that fails, fails the run. Started by ``torchrun --nproc-per-node N``, it trains
    with DistributedDataParallel on N processes (docs/distributed.md)."""

    model = Input(DiffusionModel, doc="the set-up model (e.g. from sd.lora_setup): its trainable weights train")
    batches = Input(BatchSource, doc="batches from the data graph")
    optimizer = Input(OptimizerSpec, doc="from train.optimizer")
    schedule = Input(LRSchedule, optional=True, doc="from train.lr_schedule (default: constant)")
    objective = Input(Objective, doc="from train.diffusion_objective or train.flow_matching_objective (the one "
                                       "that serves the model's kind)")
    hooks = Input(Hook, optional=True, multi=True, doc="samples, saves, backups, logging ... run during training")
    trained = Output(DiffusionModel, follows="model", doc="the trained model (the model it was given; same type)")

    epochs = Param(int, 1, min=1, doc="passes over the data (ignored when max_steps is set)")
    max_steps = Param(int, 0, min=0, doc="optimizer updates to run; 0 = as many as `epochs` takes")
    gradient_accumulation = Param(int, 1, min=1, doc="batches per optimizer update")
    max_grad_norm = Param(float, 1.0, min=0, doc="clip the gradient norm to this; 0 = no clipping")
    precision = Param(Choice("fp32", "bf16", "fp16"), "fp32",
                      doc="autocast dtype of the forward pass (fp16 adds a gradient scaler; on a CPU, "
                          "fp16 trains in fp32 and float16 weights are made float32: much faster there)")
    gradient_checkpointing = Param(bool, False, doc="recompute activations in backward: less memory, slower")
    seed = Param(Seed, 42, doc="seed of the training noise, timesteps and dropout")
    device = Param(Device(), "auto", doc="where to train (auto: GPU if there is one)")
    loss_smoothing = Param(float, 0.9, min=0, max=0.999, doc="weight of the past in the smoothed loss")
    compile = Param(Choice(*speed.COMPILE_MODES), "off",
                    doc="torch.compile the denoiser (unet/transformer) with this mode: faster steps after a slow "
                        "first one; previews run it uncompiled; on a CPU needs g++")
    optimizer_kernel = Param(Choice(*speed.KERNELS), "auto",
                             doc="the optimizer's step kernel: fused (one kernel), foreach (batched), for-loop "
                                 "(per weight); auto: the optimizer's own choice")
    tf32 = Param(bool, False, doc="TF32 matmuls and convolutions on CUDA (Ampere+): faster fp32, ~10-bit mantissa; "
                                  "nothing elsewhere")
    attention = Param(Choice(*speed.ATTENTION), "auto",
                      doc="scaled-dot-product attention kernel (torch's sdpa_kernel); auto: torch picks; one this "
                          "device lacks is an error before training")
    offload_activations = Param(bool, False, doc="keep the activations saved for backward in (pinned) CPU memory: "
                                                 "less GPU memory, slower; nothing on a CPU")
    stop_parts = Param(StrList, [], doc="stop training a part partway: 'part=N epochs' or 'part=N steps' "
                                          "entries (e.g. text_encoder=30 epochs; OneTrainer's stop_training_after); "
                                          "its learning rate is 0 from then on")
    distributed = Param(Choice(*distributed.MODES), "auto",
                        doc="several processes (torchrun): ddp = DistributedDataParallel, gradients averaged over "
                            "the ranks, hooks on rank 0; fsdp = the trained parts' weights, gradients and optimizer "
                            "state sharded over the ranks (fully_shard), for models that do not fit one GPU; auto: "
                            "ddp when started by torchrun with more than one process; off: each process trains alone")

    def run(self, ctx, model, batches, optimizer, schedule, objective, hooks):
        """Set up (device, precision, weights, state), resume, the epoch loop (``Steps``), the end."""
        import torch

        device, ddp = self._device()
        precision = precision_on(ctx, model, device, self.precision)
        torch.manual_seed(ctx.seed_for(self.seed, *rank_salt()))  # dropout draws from torch's global generator
        parts, params = self._place(model, device, ddp)
        fast = speed.Options(ctx, model, device, precision, self)
        batches_per_epoch = count_batches(batches)
        steps_per_epoch = max(1, batches_per_epoch // self.gradient_accumulation)
        total = self.max_steps or self.epochs * steps_per_epoch
        state = self._state(ctx, model, optimizer, schedule, total, device, precision, steps_per_epoch)
        # side effects (samples, saves, EMA, TensorBoard, validation) come from rank 0 alone
        run = TrainRun(ctx, model, state, batches, total, steps_per_epoch, device, objective,
                       ordered(hooks) if distributed.is_main() else [], parts=parts)
        call(run.hooks, "on_start", run)
        if ctx.resume:
            resume(run)
        ctx.log(start_line(params, device, precision, total, batches_per_epoch, ddp))
        with fast:
            stopped = Steps(run, params, precision, self, fast).train()
        return {"trained": self._finish(run, stopped)}

    def _device(self):
        """The training device and whether to train with DDP; with DDP the process group is joined and
        the device is this rank's (``cuda:LOCAL_RANK``)."""
        device = resolve_device(self.device)
        ddp = distributed.wanted(self.distributed)
        if ddp:
            distributed.init(device.type)
            device = distributed.local_device(device)
        return device, ddp

    def _place(self, model, device, ddp: bool):
        """The model on its device, ready to train, and ``_parts``. FSDP shards first: it moves each block
        to the GPU as its 1/N share, so a part larger than one GPU fits."""
        shard_first = ddp and self.distributed == "fsdp"
        if shard_first:
            parts, params = self._parts(model, device, ddp)
        model.prepare_for_training(device, self.gradient_checkpointing)
        if not shard_first:
            parts, params = self._parts(model, device, ddp)
        return parts, params

    def _parts(self, model, device, ddp: bool):
        """The DDP/FSDP wrappers (``distributed.parallel_parts``; None without DDP) and the trainable
        weights. Built before the optimizer and a resume, which then see the weights the wrappers train
        (FSDP replaces them with sharded ones, so they are read again after it)."""
        params = trainable_weights(model)  # none: said here, before a wrapper says it less clearly
        if not ddp:
            return None, params
        parts = distributed.parallel_parts(self.distributed, model, device)
        return parts, trainable_weights(model)

    def _state(self, ctx, model, optimizer, schedule, total: int, device, precision: str,
               steps_per_epoch: int = 1) -> TrainState:
        """The run's stateful objects: optimizer, LR schedule (default: constant; parts in ``stop_parts``
        get their own group, whose factor drops to 0 at its stop), gradient scaler (on for fp16 only) and
        the noise generator, seeded by the run seed and the node id."""
        import torch

        from . import part_stops
        from .lr_schedule import LRScheduleConfig

        state = TrainState(seed=self.seed)
        stops = part_stops.stop_steps(part_stops.parse(self.stop_parts), steps_per_epoch,
                                      model.trained_parts()) if self.stop_parts else {}
        groups = model.param_groups_by_part(getattr(model, "learning_rates", None) or {}) if stops \
            else model.param_groups()
        state.optimizer = speed.build_optimizer(optimizer, groups, self.optimizer_kernel)
        limits = part_stops.group_limits(state.optimizer.param_groups, stops) if stops else None
        state.lr_scheduler = (schedule or LRScheduleConfig("constant")).build(state.optimizer, total, limits)
        state.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        state.generator = ctx.torch_generator(self.seed, *rank_salt())
        return state

    def _finish(self, run, stopped: bool):
        """The end of a run: a stop writes a backup, the hooks end (final saves), the model goes back to
        inference; then a stop whose backup failed, or a failed final save, fails the run."""
        from .schedule_free import to_inference

        state, model = run.state, run.model
        backup_failed = stop_backup(run) if stopped else None
        to_inference(state.optimizer)  # schedule-free: the averaged weights for the final saves and the result
        model.progress = {"step": state.step, "epoch": state.epoch}
        n = len(run.save_failures)
        call(run.hooks, "on_end", run, stopped)
        final_failed = run.save_failures[n:]
        backup = final_failure_backup(run, final_failed)
        finish = getattr(run.parts, "finish", None)  # FSDP: the full weights gathered onto rank 0's model
        if finish is not None:
            finish()
        model.prepare_for_inference()
        if backup_failed:
            raise RuntimeError(self._lost_stop(run.ctx, state.step, run.total_steps, backup_failed[0][1]))
        if final_failed:
            raise RuntimeError(self._failed_final_save(final_failed, backup))
        return model

    def check(self, c) -> None:
        """Before a run: the batches carry the fields the model needs, the optimizer and the LR
        schedule go together, ``stop_parts`` parses, and under FSDP the hooks and the precision can work sharded."""
        self._check_fields(c)
        self._check_schedule(c)
        self._check_stops(c)
        if self.distributed == "fsdp":  # hooks that need the whole model on rank 0, fp16's gradient scaler
            from .fsdp import check_fsdp

            check_fsdp(c, self.precision, self.optimizer_kernel)

    def _check_stops(self, c) -> None:
        from . import part_stops

        try:
            part_stops.parse(self.stop_parts)
        except ValueError as e:
            c.error(str(e).split(": ", 1)[1], param="stop_parts")

    @staticmethod
    def _check_schedule(c) -> None:
        """A train.optimizer beside a train.lr_schedule that does not suit it (Adafactor's schedule without
        Adafactor, a schedule-free optimizer under a decaying schedule)."""
        from .lr_schedule import pairing_problems

        optimizers, schedules = c.linked("optimizer"), c.linked("schedule")
        if not (optimizers and schedules and optimizers[0].spec.type_id == "train.optimizer"
                and schedules[0].spec.type_id == "train.lr_schedule"):
            return
        for severity, message in pairing_problems(optimizers[0].params, schedules[0].params):
            (c.error if severity == "error" else c.warn)(message, input="schedule")

    @staticmethod
    def _check_fields(c) -> None:
        """The batches carry every field the model's nodes need. A node upstream of ``model`` may declare
        ``needed_batch_fields() -> {field: how to provide it}``; a batch source node may declare
        ``batch_fields(view) -> set of field names`` (runtime.data's batches do)."""
        sources = c.linked("batches")
        fields_of = getattr(sources[0].instance(), "batch_fields", None) if sources else None
        if fields_of is None:
            return
        have = set(fields_of(sources[0]))
        for view in c.ancestors("model"):
            needs = getattr(view.instance(), "needed_batch_fields", None)
            for name, fix in (needs() if needs else {}).items():
                if name not in have:
                    c.error(f"node {view.id!r} ({view.spec.type_id}) needs the batch field {name!r}, but the batches "
                            f"from {sources[0].id!r} have only {', '.join(sorted(have)) or 'no fields'}: {fix}",
                            input="batches")

    @staticmethod
    def _lost_stop(ctx, step: int, total: int, why: str) -> str:
        """The failure of a stop whose backup could not be written: nothing to resume from at ``step``."""
        from runtime.backups import list_backups, read_meta

        earlier = list_backups(ctx.workspace)
        head = f"stopped at step {step} of {total}, but its backup could not be written ({why})"
        if not earlier:
            return f"{head} and there is no earlier backup: nothing to resume from"
        last = (read_meta(earlier[-1]) or {}).get("step", "?")
        return (f"{head}; --resume last continues from the previous backup, step {last} ({earlier[-1]}), "
                f"the steps after it are lost")

    @staticmethod
    def _failed_final_save(failed: list, backup) -> str:
        """The failure of a run whose saves at the end failed; a backup keeps the trained state if it can."""
        what, why = failed[0]
        keep = ("and no backup could be written either" if backup is None else
                f"the trained state is in the backup {backup}: fix the cause, then run again with --resume last "
                "to save it")
        return f"training finished, but {what} failed ({why}); {keep}"


def start_line(params: list, device, precision: str, total: int, batches_per_epoch: int, ddp: bool) -> str:
    """The log line a run starts with: what trains where, for how long."""
    ranks = f" on {distributed.world_size()} ranks" if ddp else ""
    return (f"training {sum(p.numel() for p in params):,} weights on {device}{ranks} ({precision}) for {total} "
            f"steps, {batches_per_epoch} batches per epoch{' per rank' if ddp else ''}")


def rank_salt() -> tuple:
    """Seed salt of this rank: none on rank 0 (a one-process run draws the same), the rank on the others."""
    r = distributed.rank()
    return (f"rank{r}",) if r else ()


def trainable_weights(model) -> list:
    """The weights the optimizer updates; none is an error (the model skipped its setup node)."""
    params = model.trainable_parameters()
    if not params:
        raise ValueError("the model has no trainable weights: connect it through a setup node "
                         "(e.g. sd.lora_setup) before train.loop")
    return params


def count_batches(batches) -> int:
    """Batches per epoch; none is an error."""
    n = len(batches)
    if n == 0:
        raise ValueError("the batch source is empty (no samples, or fewer samples than the batch size "
                         "with drop-last)")
    return n


def resume(run) -> None:
    """Restore the state of the backup ``--resume`` names (after the hooks' ``on_start``), and say so.
    Each rank takes its own RNG states from it; from a backup that has rank 0's only (written before
    they were kept), the other ranks re-seed their noise from the step."""
    ctx, state = run.ctx, run.state
    t0 = time.perf_counter()
    meta = load_backup(run, ctx.resume)
    if distributed.rank() and not meta.get("rank_rngs"):
        state.generator = ctx.torch_generator(state.seed, *rank_salt(), state.step)
    ctx.log(f"resumed from {ctx.resume} at step {state.step} (epoch {state.epoch + 1}, "
            f"batch {state.epoch_batch}); backup written because: {meta.get('reason', '?')}",
            resumed_step=state.step, seconds=round(time.perf_counter() - t0, 3))


class Steps:
    """The epoch/batch loop of one run: micro-steps, optimizer updates, reports, then hooks and commands.

    What a step needs is bound once here, so a step walks no module attributes. With ``run.parts`` (DDP
    wrappers, ``distributed.DDPParts``) the micro-steps run through them, the reported loss is the mean
    over the ranks, a non-finite loss on any rank stops every rank, and so does a stop on any rank; a
    backup that rank 0's hooks or commands ask for is written by every rank together after the step."""

    def __init__(self, run, params: list, precision: str, node, fast=None):
        import torch

        self.run, self.ctx, self.state, self.hooks = run, run.ctx, run.state, run.hooks
        self.model, self.objective, self.batches, self.params = run.model, run.objective, run.batches, params
        self.total, self.accum, self.beta = run.total_steps, node.gradient_accumulation, node.loss_smoothing
        self.max_norm = node.max_grad_norm if node.max_grad_norm > 0 else float("inf")
        self.autocast = autocast_for(run.device, precision)
        fast = fast or speed.Options(run.ctx, run.model, run.device, precision)
        self.attention, self.offload, self.eager = fast.step, fast.forward, fast.hooks
        self.isfinite, self.clip = torch.isfinite, torch.nn.utils.clip_grad_norm_
        self.effective_lrs = effective_lrs
        self.parts, self.mean_over_ranks, self.finite = run.parts, distributed.mean_over_ranks, math.isfinite
        self.flags_on_any_rank, self.flags_sum = flags_on_any_rank, sum_over_ranks
        self.update_loss = 0.0  # the mean loss of the batches of the update in progress
        self.window = collections.deque(maxlen=20)  # the last step times, for it/s
        self.t_step = time.perf_counter()

    def train(self) -> bool:
        """Epochs until ``total`` updates are done or a stop is asked for; True when stopped."""
        stopped = self.agree_stop()
        while self.state.step < self.total and not stopped:
            stopped = self.epoch()
        return stopped

    def epoch(self) -> bool:
        """The current epoch from where it stands, up to its end, the last update or a stop; True when stopped."""
        state = self.state
        for batch in self.batches.epoch(state.epoch, start=state.epoch_batch):
            state.epoch_batch += 1
            self.micro_step(batch)
            if state.micro_step < self.accum:
                continue
            self.report(self.update())
            self.after_update()
            stop = self.agree_stop()
            if stop or state.step >= self.total:
                return stop
        state.epoch += 1
        state.epoch_batch = 0
        with self.eager():
            call(self.hooks, "on_epoch_end", self.run)
        return self.agree_stop()

    def agree_stop(self) -> bool:
        """Whether to stop; with DDP a collective, so a stop on any rank (Ctrl-C, SIGTERM, the stop command
        on rank 0) stops them all at the same step, and no rank runs ahead of rank 0's hooks. The same
        all_reduce says whether a backup was asked for: then every rank takes part in it here."""
        if self.parts is None:
            return self.ctx.cancelled
        # the agreed answer: a flag raised after it waits for the next step
        stop, backup = self.flags_on_any_rank(self.ctx.cancelled, bool(self.run.backup_requests))
        if stop and not self.ctx.cancelled:
            self.ctx.cancel.request("stop on another rank")
        if backup:
            self.agreed_backup(stop)
        return stop

    def agreed_backup(self, stop: bool) -> None:
        """The backup the ranks agreed on, written by all of them (a stop's backup at the end covers it)."""
        run = self.run
        reasons, run.backup_requests = list(dict.fromkeys(run.backup_requests)), []
        if stop:
            return
        with report_save_errors(self.ctx, f"backup at step {self.state.step}", run.save_failures):
            write_backup(run, ", ".join(reasons) or "asked on rank 0")

    def micro_step(self, batch) -> None:
        """Forward, backward of the loss's share of the update, both with the chosen attention kernel."""
        state = self.state
        sync = self.parts.step(state.micro_step + 1 >= self.accum) if self.parts else contextlib.nullcontext()
        share = self.rank_share(batch) if self.parts else 1.0
        with self.attention(), sync:  # DDP: gradients averaged on the update's last micro-batch only
            loss = self.forward(batch)
            state.scaler.scale(loss * (share / self.accum)).backward()
        self.update_loss += loss.item() * share / self.accum
        state.micro_step += 1

    def rank_share(self, batch) -> float:
        """This rank's weight in the ranks' mean (a collective): its items x ranks / the step's items, so
        each item of a step split unevenly (2 + 1 at an epoch's end) counts as in one process's mean of
        the whole step. 1.0 when some rank's batches do not say their items (no ``_index``)."""
        n = len(batch.get("_index") or ()) if isinstance(batch, dict) else 0
        total, unknown = self.flags_sum(float(n), float(n == 0))
        return 1.0 if unknown or not total else n * distributed.world_size() / total

    def forward(self, batch):
        """The loss of one batch under autocast (saved activations offloaded when asked), checked finite."""
        state = self.state
        with self.offload(), self.autocast:
            loss, _metrics = self.objective.loss(self.model, batch, state.generator)
        if self.parts is None and not self.isfinite(loss):
            self.not_finite(loss.item())
        return loss

    def not_finite(self, loss: float, where: str = ""):
        state = self.state
        raise FloatingPointError(
            f"loss is {loss}{where} at step {state.step + 1} (epoch {state.epoch + 1}); "
            "training stopped and the backups in the run folder are left as they were; "
            "lower the learning rate, or train in bf16/fp32 instead of fp16")

    def update(self):
        """One optimizer update: unscale, clip, step, scaler update, LR step, zero grad. Returns the
        gradient norm before clipping. With DDP the gradients are the ranks' mean here, so clipping
        sees the synchronised ones; a non-finite loss on any rank stops all before the step."""
        state = self.state
        if self.parts is not None:
            local, self.update_loss = self.update_loss, self.mean_over_ranks(self.update_loss)
            if not self.finite(self.update_loss):
                here = not self.finite(local)
                self.not_finite(local if here else self.update_loss, " on this rank" if here else " on another rank")
        state.scaler.unscale_(state.optimizer)
        grad_norm = self.clip(self.params, self.max_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.lr_scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.micro_step = 0
        return grad_norm

    def report(self, grad_norm) -> None:
        """The smoothed loss, the run's metrics and the progress event of the update just made."""
        state, loss, beta = self.state, self.update_loss, self.beta
        now = time.perf_counter()
        step_time, self.t_step = now - self.t_step, now
        self.window.append(step_time)
        state.smoothed_loss = loss if state.smoothed_loss is None else (
            beta * state.smoothed_loss + (1 - beta) * loss)
        lr = self.effective_lrs(state.optimizer)[0]  # d * lr for the learning-rate free optimizers
        norm = float(grad_norm)
        self.run.metrics.update(loss=loss, smoothed_loss=state.smoothed_loss, lr=lr, grad_norm=norm)
        self.ctx.progress(state.step, self.total, epoch=state.epoch + 1, loss=round(loss, 6),
                          smoothed_loss=round(state.smoothed_loss, 6), lr=lr, grad_norm=round(norm, 6),
                          it_s=round(len(self.window) / sum(self.window), 3), step_time=round(step_time, 5))

    def after_update(self) -> None:
        """The hooks' ``on_step_end``, then the commands that arrived. The model's ``progress`` is the
        step just made, so what a hook saves says how long it trained."""
        self.model.progress = {"step": self.state.step, "epoch": self.state.epoch}
        with self.eager():
            call(self.hooks, "on_step_end", self.run, self.update_loss)
            run_commands(self.ctx, self.hooks, self.run)
        self.update_loss = 0.0


def run_commands(ctx, hooks: list, run) -> None:
    """The commands that arrived since the last update: backup here (under DDP: asked for, written by
    every rank after the step), the rest to the hooks."""
    for cmd in ctx.commands():
        name = cmd.get("command")
        if name == "stop":
            continue  # the inbox already raised the cancel flag
        if name == "backup":
            run.request_backup("command")
            continue
        if not any(call(hooks, "on_command", run, cmd)):
            ctx.warn(f"command {name!r} ignored: no hook connected to train.loop handles it")


def flags_on_any_rank(*flags: bool) -> list:
    """Each flag, true on every rank when it is true on any rank: one all_reduce (MAX) for all of them."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def sum_over_ranks(*values: float) -> list:
    """Each value summed over the ranks: one all_reduce (SUM) for all of them."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def final_failure_backup(run, failed: list):
    """After the hooks' ``on_end``: the other ranks wait for rank 0's final saves; when one failed, a
    backup keeps the trained state (every rank takes part under DDP). Returns that backup's folder
    (None on the other ranks, or when it could not be written either)."""
    if run.parts is None:
        distributed.barrier()
        wanted = bool(failed)
    else:  # also the barrier
        wanted = flags_on_any_rank(bool(failed))[0]
    if not wanted:
        return None
    n = len(run.save_failures)
    with report_save_errors(run.ctx, "backup after the failed final save", run.save_failures):
        backup = write_backup(run, "final save failed")
    return backup if len(run.save_failures) == n else None


def stop_backup(run) -> list:
    """The backup of a stopped run; returns the failures it had (none: written)."""
    ctx, step = run.ctx, run.state.step
    ctx.log(f"stopped at step {step} of {run.total_steps}; writing a backup to resume from")
    n = len(run.save_failures)
    with report_save_errors(ctx, f"backup at step {step}", run.save_failures):
        write_backup(run, "stopped")
    return run.save_failures[n:]
