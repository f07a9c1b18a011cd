"""The step loop of a training stage; everything else is a hook.

Orbit's shape (Controller + StandardTrainer): the loop counts steps and
epochs and calls one compiled train step; checkpoints, preemption, logs,
evaluation and the final model hang on it as small `Hook`s
(`training/hooks.py`). The loop knows none of their concerns.

Stopping. A hook calls `loop.request_stop(reason, end_epoch=...)` after a
step; the loop stops before the next one. `end_epoch` says whether an epoch
that this very step completed still gets its epoch end (`after_epoch`):
a preemption finishes the epoch as usual, `stop_after_steps` does not. The
first request wins.
"""


class Hook:
    """Does nothing at every point of the loop; subclasses override some.

    Points, in the order the loop reaches them: `begin`, then per epoch
    `begin_epoch`, per step `before_step` and `after_step(loop, logs)`
    (`logs`: the step's float values; hooks earlier in the list may add
    keys for later ones), `after_epoch(loop, logs)` (`logs`: the epoch's
    metrics, filled by the hooks in list order), and `end`. `abort` runs
    instead of the rest when an exception leaves the loop.
    `on_step_error(loop, err)` returns True when the hook recovered from a
    failed step (the loop then runs the same step again).
    """

    def begin(self, loop):
        pass

    def begin_epoch(self, loop):
        pass

    def before_step(self, loop):
        pass

    def after_step(self, loop, logs):
        pass

    def after_epoch(self, loop, logs):
        pass

    def end(self, loop):
        pass

    def abort(self, loop):
        pass

    def on_step_error(self, loop, err):
        return False


class TrainLoop:
    """Runs `train_step` from `step` to `total_steps` under a list of hooks.

    Args:
        train_step: callable `(iterator, stop_flag: float) -> dict` of float
            values. `stop_flag` is the hooks' request to stop every worker
            (see `PreemptionHook`): the step all-reduces it into `stop`.
        iterator: what `train_step` reads; a hook may replace it
            (`loop.iterator = ...`) to resume the data elsewhere.
        step: int. The first step (the restored one on resume).
        steps_per_epoch: int.
        total_steps: int. A whole number of epochs. A hook may lower it at
            an epoch's end (that epoch is then the last one).

    After `run`: `result` = {"step", "stopped", "preempted"} (hooks may
    add to it in `end`), `epoch_logs` = the last epoch's metrics.
    """

    def __init__(self, train_step, iterator, *, step, steps_per_epoch, total_steps):
        if int(total_steps) % int(steps_per_epoch):
            raise ValueError(f"`total_steps` must be a multiple of `steps_per_epoch` "
                             f"({steps_per_epoch}). Received: total_steps={total_steps}")
        self.train_step, self.iterator = train_step, iterator
        self.step, self.steps_per_epoch = int(step), int(steps_per_epoch)
        self.total_steps = int(total_steps)
        self.epoch = self.step // self.steps_per_epoch
        self.stop_flag = 0.0
        self.stop_reason = None
        self._stop_ends_epoch = True
        self.epoch_logs = {}
        self.result = {}

    def run(self, hooks):
        """Runs the steps; returns `result`."""
        try:
            self._notify(hooks, "begin")
            while self.step < self.total_steps and not self.stopping:
                self.epoch = self.step // self.steps_per_epoch
                self._notify(hooks, "begin_epoch")
                while self.step < self.epoch_end and not self.stopping:
                    logs = self._train_step(hooks)
                    if logs is None:
                        continue  # a hook recovered from the failed step: again
                    self.step += 1
                    self._notify(hooks, "after_step", logs)
                if self.epoch_complete:
                    self.epoch_logs = {}
                    self._notify(hooks, "after_epoch", self.epoch_logs)
            self.result = {"step": self.step, "stopped": not self.finished, "preempted": None}
            self._notify(hooks, "end")
        except BaseException:
            self._notify(hooks, "abort")
            raise
        return self.result

    def _notify(self, hooks, point, *args):
        for hook in hooks:
            getattr(hook, point)(self, *args)

    def _train_step(self, hooks):
        """One step; None when it failed and a hook recovered from that."""
        for hook in hooks:
            hook.before_step(self)
        try:
            return self.train_step(self.iterator, self.stop_flag)
        except Exception as err:
            if any(hook.on_step_error(self, err) for hook in hooks):
                return None
            raise

    # ---- state the hooks read ------------------------------------------------
    @property
    def epoch_end(self):
        """The step that ends the epoch in progress."""
        return (self.epoch + 1) * self.steps_per_epoch

    @property
    def stopping(self):
        return self.stop_reason is not None

    @property
    def epoch_complete(self):
        """The last step ended the epoch and no stop request skips its end."""
        return self.step == self.epoch_end and self._stop_ends_epoch

    @property
    def finished(self):
        """Every planned step ran (and no stop request skipped the last
        epoch's end)."""
        return self.step >= self.total_steps and self._stop_ends_epoch

    def request_stop(self, reason, *, end_epoch):
        """Stops after the step in progress (the first request wins).

        Args:
            reason: str. Read by the hooks' `end` (e.g. "preempted").
            end_epoch: bool. Whether an epoch this step completed still
                gets its `after_epoch`.
        """
        if self.stop_reason is None:
            self.stop_reason, self._stop_ends_epoch = reason, bool(end_epoch)

    def interrupt_epoch_end(self, reason):
        """Stops in the middle of an epoch's end (e.g. a signal during its
        evaluation), whatever stop was requested before: the epoch counts as
        not ended (`epoch_complete` and `finished` are False), so the hooks
        after this one skip it and a resume runs its end again."""
        self.stop_reason, self._stop_ends_epoch = reason, False
