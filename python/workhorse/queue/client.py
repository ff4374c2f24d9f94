"""`queue.client`: what is queued, scheduled, retrying, dead, running, and who works on it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from workhorse.queue.job import QueuedJob, queued_job

if TYPE_CHECKING:
    from workhorse import _core

__all__ = ["BusyWorker", "Client", "Page", "QueueInfo", "WorkerPool"]

PER_PAGE = 20


@dataclasses.dataclass(frozen=True)
class QueueInfo:
    """One job name's queue: counts, the oldest ready job's wait (latency, s), paused."""

    name: str
    ready: int
    scheduled: int
    retry: int
    dead: int
    latency: float
    paused: bool
    running: int


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of scheduled, retry or dead jobs (oldest first) and the size of the set."""

    jobs: list[QueuedJob]
    total: int


@dataclasses.dataclass(frozen=True)
class WorkerPool:
    """A worker process's heartbeat: which names it serves, with what concurrency."""

    worker_id: str
    pid: int
    host: str
    names: list[str]
    concurrency: int
    started_at: float
    heartbeat_at: float


@dataclasses.dataclass(frozen=True)
class BusyWorker:
    """A job running now, where, since when, and its last check-in."""

    worker_id: str
    job_id: str
    name: str
    started_at: float
    checkin: str | None
    checkin_at: float | None


def _check_page(page: object) -> int:
    if isinstance(page, bool) or not isinstance(page, int):
        raise TypeError(f"page must be an int, got {type(page).__name__}")
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    return page


def _check_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise TypeError(f"job id must be a non-empty str, got {job_id!r}")
    return job_id


class Client:
    """Look into a queue and act on it (gocraft's client, the dashboard's API)."""

    def __init__(self, core: _core.QueueCore) -> None:
        self._core = core

    def queues(self) -> list[QueueInfo]:
        return [QueueInfo(*row) for row in self._core.queues()]

    def _page(self, which: str, page: int) -> Page:
        jobs, total = self._core.page(which, _check_page(page), PER_PAGE)
        return Page([queued_job(j) for j in jobs], int(total))

    def scheduled_jobs(self, page: int = 1) -> Page:
        return self._page("scheduled", page)

    def retry_jobs(self, page: int = 1) -> Page:
        return self._page("retry", page)

    def dead_jobs(self, page: int = 1) -> Page:
        return self._page("dead", page)

    def retry_dead_job(self, job_id: str) -> bool:
        """Move one dead job back to its queue (fails reset); False if it is not dead."""
        return bool(self._core.retry_dead(_check_id(job_id)))

    def retry_all_dead_jobs(self) -> int:
        return int(self._core.retry_dead(None))

    def delete_dead_job(self, job_id: str) -> bool:
        return bool(self._core.delete("dead", _check_id(job_id)))

    def delete_all_dead_jobs(self) -> int:
        return int(self._core.delete("dead", None))

    def delete_scheduled_job(self, job_id: str) -> bool:
        return bool(self._core.delete("scheduled", _check_id(job_id)))

    def delete_retry_job(self, job_id: str) -> bool:
        return bool(self._core.delete("retry", _check_id(job_id)))

    def delete_all_scheduled_jobs(self) -> int:
        return int(self._core.delete("scheduled", None))

    def delete_all_retry_jobs(self) -> int:
        return int(self._core.delete("retry", None))

    def worker_pools(self) -> list[WorkerPool]:
        return [WorkerPool(**pool) for pool in self._core.pools()]

    def busy_workers(self) -> list[BusyWorker]:
        return [BusyWorker(*row) for row in self._core.busy()]

    def pause(self, name: str) -> None:
        """Stop claiming jobs of this name (in every process) until unpause."""
        self._core.set_paused(_check_name(name), True)

    def unpause(self, name: str) -> None:
        self._core.set_paused(_check_name(name), False)

    def stats(self) -> dict[str, Any]:
        """Counters of the whole queue: processed, failed, dead, stale_acks (refused), reaped,
        data_losses (times Redis was found to have lost its data)."""
        processed, failed, dead, stale_acks, reaped, data_losses = self._core.stats()
        return {
            "processed": processed,
            "failed": failed,
            "dead": dead,
            "stale_acks": stale_acks,
            "reaped": reaped,
            "data_losses": data_losses,
        }


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"job name must be a non-empty str, got {name!r}")
    return name
