"""The training loop every network here shares: learning-rate schedule per step, the
JSON-lines log, timed validation with a checkpoint, resume, and a clean stop on Ctrl-C.

What differs between networks (the batch's loss, the validation) comes in as functions.
The checkpoint (``WORKDIR/last.pt``) holds "net", "optimizer", "epoch" (the next one to
run), "step", "generator" (the shuffling state), "averaged" (the weight average, when
kept) and what the script adds (e.g. "config", "args"); ``--init`` readers take
``initial_weights``.

The weight average: an exponential moving average of the weights and BatchNorm
statistics, updated every step. Late in a run the validation error of the raw weights
still swung by 0.1 points of NME between checkpoints (version 5's run: 3.78, 3.88,
3.80 % in its last four epochs); the average is what is validated and exported.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from training.runlog import RunLog, StopFlag

# One batch -> (loss to minimise, the fields to log for it, already rounded).
StepFn = Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def initial_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a run started from this checkpoint takes: the average when it has one."""
    return checkpoint.get("averaged") or checkpoint["net"]


class WeightAverage:
    """Exponential moving average of a network's parameters and buffers (BatchNorm
    statistics): ``decay`` per step, so it spans about 1 / (1 - decay) steps."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = copy.deepcopy(net).eval()
        for p in self.average.parameters():
            p.requires_grad_(False)
        # The tensors themselves: the optimizer and load_state_dict change them in place.
        self._pairs = list(
            zip(self.average.state_dict().values(), net.state_dict().values(), strict=True)
        )

    @torch.no_grad()
    def update(self) -> None:
        for mean, value in self._pairs:
            if mean.is_floating_point():
                mean.lerp_(value, 1.0 - self.decay)
            else:
                mean.copy_(value)  # counters such as num_batches_tracked


LOG_EVERY = 20  # steps between training log lines


class TrainLoop:
    """Runs epochs of ``step`` over a dataset, logging, validating every ``val_every``
    seconds (and checkpointing then), checkpointing after each epoch, stopping cleanly
    on SIGINT/SIGTERM."""

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_at: Callable[[int], float],
        log: RunLog,
        args: argparse.Namespace,
        saved_with: dict[str, Any] | None = None,
        average_decay: float = 0.0,
    ) -> None:
        """``args``: the script's options ``workdir`` (where the checkpoint goes),
        ``seed`` (of the shuffling) and ``val_every`` (seconds); ``saved_with``: more
        entries for the checkpoint; ``average_decay`` > 0 keeps a weight average."""
        self.net, self.optimizer, self.lr_at, self.log = net, optimizer, lr_at, log
        self.average = WeightAverage(net, average_decay) if average_decay > 0 else None
        self.checkpoint = args.workdir / "last.pt"
        self.generator = torch.Generator().manual_seed(args.seed)
        self.val_every = float(args.val_every)
        self.saved_with = saved_with or {}
        self.epoch = self.step = 0
        self.t0 = time.time()

    @property
    def trained(self) -> torch.nn.Module:
        """The network to validate and export: the weight average when one is kept."""
        return self.net if self.average is None else self.average.average

    def resume(self) -> bool:
        """Load the checkpoint of ``workdir`` when there is one: network, optimizer,
        position and shuffling state. True when it was loaded."""
        if not self.checkpoint.is_file():
            return False
        state = torch.load(self.checkpoint, weights_only=False)
        self.net.load_state_dict(state["net"])
        if self.average is not None:
            self.average.average.load_state_dict(initial_weights(state))
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.generator.set_state(state["generator"])
        print(f"resumed at epoch {self.epoch}", flush=True)
        return True

    def save(self, epoch: int) -> None:
        """Write the checkpoint atomically; ``epoch`` is the one to run next on resume."""
        state = {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "generator": self.generator.get_state(),
        } | self.saved_with
        if self.average is not None:
            state["averaged"] = self.average.average.state_dict()
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    @property
    def minutes(self) -> float:
        """Minutes since ``run`` started, rounded for the log."""
        return round((time.time() - self.t0) / 60, 1)

    def run(
        self,
        dataset: torch.utils.data.Dataset,
        epochs: int,
        step: StepFn,
        validate: Callable[[], dict],
        loader_args: dict[str, Any],
    ) -> bool:
        """Train from the current epoch up to ``epochs``; False when stopped early (the
        checkpoint is written and an "interrupted" entry logged). ``dataset.epoch`` is
        set before each epoch, for its augmentation's random streams."""
        stop = StopFlag()
        self.t0 = last_val = time.time()
        seen = 0
        for epoch in range(self.epoch, epochs):
            dataset.epoch = epoch
            loader = torch.utils.data.DataLoader(dataset, generator=self.generator, **loader_args)
            for batch in loader:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                loss, fields = step(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.average is not None:
                    self.average.update()
                self.step += 1
                seen += len(batch[0])
                if self.step % LOG_EVERY == 0:
                    elapsed = time.time() - self.t0
                    self.log(
                        {"step": self.step, "epoch": epoch, **fields}
                        | {"lr": round(self.lr_at(self.step), 7), "img_s": round(seen / elapsed, 2)}
                    )
                if time.time() - last_val > self.val_every:
                    self.log(
                        {"event": "val", "step": self.step, "epoch": epoch, "minutes": self.minutes}
                        | validate()
                    )
                    self.save(epoch)
                    last_val = time.time()
                if stop.now:
                    break
            if stop.now:
                self.save(epoch)
                self.log({"event": "interrupted", "epoch": epoch, "step": self.step})
                return False
            self.epoch = epoch + 1
            self.save(self.epoch)
        return True
