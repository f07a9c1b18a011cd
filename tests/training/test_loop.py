"""`training/loop.py`: the step loop alone, with recording hooks and a fake
train step (no TensorFlow): which hook points run, in which order, at which
steps, and how stop requests, recovered step errors and a lowered
`total_steps` end it."""

import pytest

from klassterfork.training.loop import Hook, TrainLoop


class Recorder(Hook):
    """Writes every hook point it sees as (point, step) into `events`."""

    def __init__(self, events):
        self.events = events

    def begin(self, loop):
        self.events.append(("begin", loop.step))

    def begin_epoch(self, loop):
        self.events.append(("begin_epoch", loop.epoch))

    def after_step(self, loop, logs):
        self.events.append(("step", loop.step))

    def after_epoch(self, loop, logs):
        self.events.append(("epoch", loop.step))

    def end(self, loop):
        self.events.append(("end", loop.step))

    def abort(self, loop):
        self.events.append(("abort", loop.step))


class At(Hook):
    """Calls `action(loop)` after step `step` (or at its epoch end)."""

    def __init__(self, step, action, point="after_step"):
        self.at, self.action, self.point = step, action, point

    def after_step(self, loop, logs):
        if self.point == "after_step" and loop.step == self.at:
            self.action(loop)

    def after_epoch(self, loop, logs):
        if self.point == "after_epoch" and loop.step == self.at:
            self.action(loop)


def fake_step(iterator, stop_flag):
    return {"loss": 1.0, "stop": stop_flag}


def make_loop(step=0, spe=3, total=9, train_step=fake_step):
    return TrainLoop(train_step, iter(()), step=step, steps_per_epoch=spe, total_steps=total)


def test_points_in_order_from_a_mid_epoch_step():
    events = []
    result = make_loop(step=4, spe=3, total=9).run([Recorder(events)])
    # Resumed at step 4 (epoch 1 of 0..2): epochs 1 and 2 only.
    assert events == [("begin", 4), ("begin_epoch", 1), ("step", 5), ("step", 6),
                      ("epoch", 6), ("begin_epoch", 2), ("step", 7), ("step", 8),
                      ("step", 9), ("epoch", 9), ("end", 9)]
    assert result == {"step": 9, "stopped": False, "preempted": None}


@pytest.mark.parametrize("end_epoch, epochs_ended", [(True, [3]), (False, [])])
def test_stop_at_an_epochs_last_step_ends_that_epoch_only_if_asked(end_epoch, epochs_ended):
    events = []
    stop = At(3, lambda loop: loop.request_stop("test", end_epoch=end_epoch))
    loop = make_loop()
    result = loop.run([stop, Recorder(events)])
    assert [s for p, s in events if p == "epoch"] == epochs_ended
    assert [s for p, s in events if p == "step"] == [1, 2, 3]  # none after the stop
    assert result["stopped"] is True and loop.stop_reason == "test"


def test_the_first_stop_request_wins():
    first = At(2, lambda loop: loop.request_stop("first", end_epoch=False))
    second = At(2, lambda loop: loop.request_stop("second", end_epoch=True))
    loop = make_loop()
    loop.run([first, second])
    assert loop.stop_reason == "first" and loop.step == 2
    assert not loop.epoch_complete and not loop.finished


def test_a_stop_at_the_last_step_that_ends_the_epoch_finishes_the_run():
    loop = make_loop(total=3)
    result = loop.run([At(3, lambda lp: lp.request_stop("x", end_epoch=True))])
    assert loop.finished and result["stopped"] is False


def test_lowering_total_steps_at_an_epoch_end_finishes_there():
    events = []
    cut = At(6, lambda loop: setattr(loop, "total_steps", loop.step), point="after_epoch")
    result = make_loop().run([cut, Recorder(events)])
    assert events[-1] == ("end", 6) and result == {"step": 6, "stopped": False,
                                                   "preempted": None}


def test_stop_flag_goes_into_the_step():
    seen = []

    class Flag(Hook):
        def before_step(self, loop):
            loop.stop_flag = float(loop.step == 1)  # set before the 2nd step

    def step(iterator, flag):
        seen.append(flag)
        return {"loss": 1.0}

    make_loop(total=3, train_step=step).run([Flag()])
    assert seen == [0.0, 1.0, 0.0]


def test_a_recovered_step_error_runs_the_same_step_again_with_the_new_iterator():
    calls = []

    def step(iterator, flag):
        calls.append(next(iterator))
        if calls[-1] == "bad":
            raise ValueError("a bad record")
        return {"loss": 1.0}

    class Recover(Hook):
        def on_step_error(self, loop, err):
            assert isinstance(err, ValueError)
            loop.iterator = iter(["good"] * 5)
            return True

    events = []
    loop = TrainLoop(step, iter(["good", "bad"]), step=0, steps_per_epoch=3, total_steps=3)
    loop.run([Hook(), Recover(), Recorder(events)])
    assert calls == ["good", "bad", "good", "good"]
    assert [s for p, s in events if p == "step"] == [1, 2, 3]


def test_an_unrecovered_error_aborts_the_hooks_and_propagates():
    def step(iterator, flag):
        raise ValueError("not the data")

    events = []
    with pytest.raises(ValueError, match="not the data"):
        make_loop(train_step=step).run([Hook(), Recorder(events)])
    assert events == [("begin", 0), ("begin_epoch", 0), ("abort", 0)]  # no end


def test_an_error_raised_by_a_hook_aborts_the_others():
    def fail(loop):
        raise RuntimeError("diverged")

    events = []
    with pytest.raises(RuntimeError, match="diverged"):
        make_loop().run([At(2, fail), Recorder(events)])
    assert events[-1] == ("abort", 2)


def test_total_steps_must_be_whole_epochs():
    with pytest.raises(ValueError, match=r"multiple of `steps_per_epoch` \(3\). "
                       r"Received: total_steps=4"):
        make_loop(total=4)
