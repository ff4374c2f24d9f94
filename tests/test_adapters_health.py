"""The health check: error percentage by time window or by count, recomputed on a clock."""

from __future__ import annotations

import time

import pytest
from support import run

from workhorse.adapters import HealthCheck, health
from workhorse.errors import ArgError
from workhorse.job import Job
from workhorse.middleware import Handler, adapt, apply_status_rules, is_async_handler
from workhorse.status import Status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcome(job: Job) -> None:
    if job.args.get("fail"):
        raise RuntimeError("boom")
    if job.args.get("bad"):
        raise ArgError("bad")


def runs(h: Handler, ok: int = 0, failed: int = 0) -> None:
    for _ in range(ok):
        run(h, Job("h"))
    for _ in range(failed):
        run(h, Job("h", {"fail": True}))


def test_starts_healthy() -> None:
    check = HealthCheck()
    assert check.status == 200
    assert check.endpoint() == (200, b"OK")


def test_turns_down_when_errors_exceed_pct_at_the_next_recompute() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=10, clock=clock).error_percentage(0.5, 1)
    h = adapt(apply_status_rules(outcome), check.adapter)
    runs(h, ok=2, failed=4)
    assert check.status == 200  # not recomputed yet

    clock.now += 10
    runs(h, failed=1)
    assert check.status == 500
    assert check.endpoint() == (500, b"DOWN")


def test_one_execution_never_flips_it() -> None:
    clock = Clock()
    check = HealthCheck(clock=clock).error_percentage(0.0, 15, min_count=0)
    runs(adapt(apply_status_rules(outcome), check), failed=1)
    assert check.status == 200
    clock.now += 60
    assert check.status == 500


def test_errors_age_out_of_the_time_window() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=1, clock=clock).error_percentage(0.1, 2, min_count=1)
    h = adapt(apply_status_rules(outcome), check)
    runs(h, failed=3)
    clock.now += 1
    assert check.status == 500

    clock.now += 2 * 60 + 1
    assert check.endpoint() == (200, b"OK")


def test_needs_min_count_executions_before_turning_down() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=1, clock=clock).error_percentage(0.5, 5, min_count=5)
    h = adapt(apply_status_rules(outcome), check)
    runs(h, failed=4)
    clock.now += 1
    assert check.status == 200
    runs(h, failed=1)
    clock.now += 1
    assert check.status == 500


def test_by_count_judges_the_last_n_executions() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=0, clock=clock).error_percentage_by_count(
        0.5, min_count=2, last_n=4
    )
    h = adapt(apply_status_rules(outcome), check)
    runs(h, failed=1)
    assert check.status == 200  # below min_count
    runs(h, failed=2)
    assert check.status == 500
    runs(h, ok=1)
    assert check.status == 500  # 3 of the last 4 failed
    runs(h, ok=1)
    assert check.status == 200  # 2 of the last 4: not above 50%


def test_only_error_statuses_count() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=0, clock=clock).error_percentage_by_count(0.0, 1, 5)
    h = adapt(apply_status_rules(outcome), check)
    run(h, Job("h", {"bad": True}))
    assert check.status == 200  # 400 is the caller's fault, not ours

    strict = HealthCheck(error_statuses=[400], recompute_interval=0, clock=clock)
    strict.error_percentage_by_count(0.0, 1, 5)
    run(adapt(apply_status_rules(outcome), strict), Job("h", {"bad": True}))
    assert strict.status == 500


def test_async_handler_stays_async_and_is_recorded() -> None:
    async def fail(job: Job) -> None:
        raise RuntimeError("boom")

    clock = Clock()
    check = HealthCheck(recompute_interval=0, clock=clock).error_percentage_by_count(0.0, 1, 5)
    h = adapt(apply_status_rules(fail), check)
    assert is_async_handler(h)
    assert run(h, Job("h")) == Status.INTERNAL_ERROR
    assert check.status == 500


def test_status_is_settable_until_the_next_recompute() -> None:
    clock = Clock()
    check = HealthCheck(recompute_interval=5, clock=clock)
    check.status = 500
    assert check.endpoint() == (500, b"DOWN")
    clock.now += 5
    assert check.status == 200
    with pytest.raises(ValueError):
        check.status = 404


def test_health_builds_a_check_by_window_or_by_count() -> None:
    clock = Clock()
    by_count = health(0.0, last_n=3, min_count=1, recompute_interval=0, clock=clock)
    runs(adapt(apply_status_rules(outcome), by_count), failed=1)
    assert by_count.status == 500

    by_window = health(0.0, minutes=1, min_count=1, recompute_interval=0, clock=clock)
    runs(adapt(apply_status_rules(outcome), by_window), failed=1)
    assert by_window.status == 500


@pytest.mark.parametrize(
    ("configure", "error"),
    [
        (lambda c: c.error_percentage(1.5), ValueError),
        (lambda c: c.error_percentage(-0.1), ValueError),
        (lambda c: c.error_percentage("50%"), TypeError),
        (lambda c: c.error_percentage(0.5, 0), ValueError),
        (lambda c: c.error_percentage(0.5, -1), ValueError),
        (lambda c: c.error_percentage_by_count(0.5, last_n=0), ValueError),
        (lambda c: c.error_percentage_by_count(0.5, min_count=-1), ValueError),
        (lambda c: c.error_percentage_by_count(0.5, min_count=20, last_n=10), ValueError),
        (lambda c: c.error_percentage_by_count(0.5, last_n=2.5), TypeError),
    ],
)
def test_invalid_options_are_rejected(configure: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        configure(HealthCheck())  # type: ignore[operator]


def test_invalid_constructor_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        HealthCheck(recompute_interval=-1)
    with pytest.raises(TypeError):
        HealthCheck(error_statuses="500")  # type: ignore[arg-type]


def test_the_monotonic_clock_is_read_in_the_core_for_executions_on_many_threads() -> None:
    import workhorse as wh

    check = health(pct=0.5, minutes=1, min_count=10, recompute_interval=0)
    with wh.Worker(concurrency=4) as worker:
        worker.register("h", outcome)
        worker.use(check)
        for execution in [worker.perform(Job("h")) for _ in range(100)]:
            execution.wait(5)
        assert check.status == 200
        jobs = [Job("h", {"fail": n % 5 != 0}) for n in range(300)]  # 240 of 400 fail
        for execution in [worker.perform(job) for job in jobs]:
            execution.wait(5)
    assert check.status == 500
    assert check._tally.totals(time.monotonic()) == (400, 240)


def test_by_count_on_the_monotonic_clock_forgets_older_executions() -> None:
    check = health(pct=0.5, last_n=10, min_count=10, recompute_interval=0)
    h = adapt(apply_status_rules(outcome), check)
    runs(h, failed=10)
    assert check.status == 500
    runs(h, ok=10)
    assert check.status == 200


def test_a_cycle_through_the_tallied_handler_is_collected() -> None:
    import gc
    import weakref

    class Service:
        def __init__(self) -> None:
            self.check = health()
            self.chain = self.check.adapter(self.handle)

        def handle(self, job: Job) -> None:
            return None

    service = Service()
    run(service.chain, Job("h"))
    gone = weakref.ref(service)
    del service
    gc.collect()
    assert gone() is None
