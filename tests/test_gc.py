"""Per-execution objects stay out of the cyclic GC while they cannot be part of a cycle
(rust/src/gc.rs), and every cycle they do close is still collected."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest

import workhorse as wh
from workhorse import _core


class Holder:
    """A tracked object a test puts in a cycle with a job; its weakref tells if it was freed."""

    def __init__(self, job: wh.Job | None = None) -> None:
        self.job = job


def run(make_worker, handler, job: wh.Job | None = None) -> wh.Execution:
    # A logger that keeps no records: pytest's log capture would hold the handler's exception.
    quiet = logging.getLogger("test_gc.quiet")
    quiet.propagate = False
    quiet.setLevel(logging.CRITICAL + 1)
    worker = make_worker(logger=quiet)
    worker.register("h", handler)
    execution = worker.perform(job or wh.Job("h"))
    assert execution.wait(5.0) is not None
    worker.stop()
    return execution


def test_a_clean_execution_leaves_nothing_tracked(make_worker):
    execution = run(make_worker, lambda job: job.ctx.set("n", 1))
    assert execution.status == wh.Status.SUCCESS
    job = execution.job
    assert not gc.is_tracked(job)
    assert not gc.is_tracked(job.ctx)
    assert not gc.is_tracked(execution)


def test_a_new_job_with_atomic_args_is_untracked_and_one_holding_a_list_is_tracked():
    assert not gc.is_tracked(wh.Job("h", {"n": 1, "s": "x"}))
    assert gc.is_tracked(wh.Job("h", {"items": [1, 2]}))


@pytest.mark.parametrize("where", ["ctx value", "args", "error"])
def test_a_cycle_closed_through_an_execution_is_collected(make_worker, wait_until, where):
    freed: list[weakref.ref[Holder]] = []

    def handler(job: wh.Job) -> None:
        holder = Holder(job)  # holder -> job -> ... -> holder
        freed.append(weakref.ref(holder))
        if where == "ctx value":
            job.ctx.set("holder", holder)
        elif where == "args":
            job.args["holder"] = holder  # mutated behind the Job's back, settled at the end
        else:
            exc = RuntimeError("boom")
            exc.holder = holder  # type: ignore[attr-defined]
            raise exc

    execution = run(make_worker, handler)
    assert execution.done()
    tracked = gc.is_tracked(execution.job)
    del execution
    assert tracked, "a job in a cycle must be seen by the collector"

    def collected() -> bool:
        # The executor thread may still be finishing the handle (its frame holds the error).
        gc.collect()
        return freed[0]() is None

    assert freed and wait_until(collected), "the cycle was not collected"


def test_settle_leaves_objects_without_gc_support_and_classes_alone():
    _core.settle(None, 1, "s", 2.5, wh.Job, wh.Status.SUCCESS)
    holder = Holder()
    _core.settle(holder)
    assert not gc.is_tracked(holder)  # its __dict__ holds only None
    holder.job = wh.Job("h", {"items": []})
    _core.settle(holder)
    assert gc.is_tracked(holder)


def test_an_interval_tick_runs_on_an_untracked_fork(make_worker, wait_until):
    seen: list[bool] = []
    worker = make_worker()
    worker.register("h", lambda job: seen.append(gc.is_tracked(job)))
    schedule = worker.perform_every(wh.Job("h"), 0.01, sync=True)
    assert wait_until(lambda: len(seen) >= 3)
    schedule.cancel()
    assert not any(seen)
