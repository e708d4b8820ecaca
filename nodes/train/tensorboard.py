"""TensorBoard logging as a hook node (torch.utils.tensorboard)."""

from __future__ import annotations

from pathlib import Path

from runtime import Dir, Output, Param, node
from runtime.port_types import Hook

from .hooks import TrainHook

SCALARS = ("loss", "smoothed_loss", "lr", "grad_norm", "validation_loss")


class TensorBoardHook(TrainHook):
    priority = 20  # after the hooks whose results it logs (samples, validation)

    def __init__(self, key: str, log_dir: str | None, every: int, images: bool):
        self.key, self.log_dir, self.every, self.images = key, log_dir, every, images
        self.writer = None
        self.logged_samples = 0

    def on_start(self, run) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise RuntimeError(f"train.tensorboard needs the tensorboard package ({e}); pip install tensorboard") \
                from None
        folder = Path(self.log_dir) if self.log_dir else run.ctx.workspace / "tensorboard"
        self.writer = SummaryWriter(str(folder))
        run.ctx.log(f"TensorBoard logs in {folder} (tensorboard --logdir {folder})")

    def on_step_end(self, run, loss: float) -> None:
        step = run.state.step
        if step % self.every == 0:
            for name in SCALARS:
                value = run.metrics.get(name)
                if value is not None:
                    self.writer.add_scalar(f"train/{name}", value, step)
        if self.images:
            self._log_samples(run)

    def _log_samples(self, run) -> None:
        import numpy as np
        from PIL import Image

        for step, tag, paths in run.samples[self.logged_samples:]:
            for i, path in enumerate(paths):
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"))
                name = f"samples{'_' + tag if tag else ''}/{i}"
                self.writer.add_image(name, arr, step, dataformats="HWC")
        self.logged_samples = len(run.samples)

    def on_end(self, run, stopped: bool) -> None:
        if self.writer is not None:
            if self.images:
                self._log_samples(run)
            self.writer.close()


@node("train.tensorboard", title="TensorBoard", category="Hooks")
class TensorBoard:
    """Log loss, smoothed loss, learning rate, gradient norm and validation loss, and the sample
    images of sample hooks, for TensorBoard (default folder: <run folder>/tensorboard)."""

    hook = Output(Hook, doc="connect to train.loop's hooks (after the sample hook, to log its images)")
    every = Param(int, 1, min=1, doc="log scalars every this many steps")
    images = Param(bool, True, doc="log sample images")
    log_dir = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/tensorboard)")

    def run(self, ctx):
        return {"hook": TensorBoardHook(ctx.node_id, self.log_dir, self.every, self.images)}
