"""The `workhorse` command: every error a shell user makes is one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

APP = textwrap.dedent(
    """
    import workhorse as wh

    worker = wh.Worker(concurrency=2)
    done = []

    @worker.handler("hello")
    def hello(job):
        done.append(job.args)

    def make(concurrency=3, queue=None):
        w = wh.Worker(concurrency=concurrency, queue=queue)
        w.register("hello", hello)
        return w

    not_a_worker = 42
    """
)


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "workhorse", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("workhorse: ") and text in lines[0], lines
    assert "Traceback" not in result.stderr


def test_help_is_on_every_command():
    commands = ["worker", "enqueue", "info", "dead", "pause", "unpause", "web"]
    for command in ([], *([c] for c in commands)):
        result = run(*command, "--help")
        assert result.returncode == 0 and "usage: workhorse" in result.stdout, command


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("app", "expected MODULE:ATTR"),
        ("nosuchmodule:worker", "cannot import 'nosuchmodule'"),
        ("app:nothing", "has no attribute 'nothing'"),
        ("app:not_a_worker", "not a wh.Worker or a factory"),
    ],
)
def test_a_bad_module_attr_is_one_line_and_exit_2(app: Path, target: str, text: str):
    one_line_error(run("worker", target, "--burst", cwd=app), 2, text)


def test_concurrency_on_a_worker_instance_is_refused(app: Path):
    one_line_error(run("worker", "app:worker", "--concurrency", "5", cwd=app), 2, "factory")


def test_unknown_names_are_refused(app: Path):
    result = run("worker", "app:worker", "--burst", "--names", "hello,nope", cwd=app)
    one_line_error(result, 2, "no handler: nope")


def test_a_burst_worker_from_a_factory_drains_and_exits(app: Path):
    result = run("worker", "app:make", "--burst", "--concurrency", "4", cwd=app)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["enqueue", "hello", "{not json"], "not valid JSON"),
        (["enqueue", "hello", "[1, 2]"], "must be a JSON object"),
        (["enqueue", "hello", "--at", "yesterday"], "ISO 8601"),
        (["enqueue", "", "{}"], "must not be empty"),
    ],
)
def test_bad_enqueue_input_is_one_line_and_exit_2(args: list[str], text: str):
    one_line_error(run(*args), 2, text)


def test_an_unreachable_queue_is_one_line_and_exit_1():
    result = run("--url", "redis://127.0.0.1:1/0", "info")
    assert result.returncode in (1, 2), result.stderr  # 2 while redis:// is not built in
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_environment_value_is_one_line(app: Path):
    one_line_error(
        run("worker", "app:make", cwd=app, env={"WORKHORSE_CONCURRENCY": "many"}),
        2,
        "WORKHORSE_CONCURRENCY must be an integer",
    )


def test_enqueue_prints_the_queued_job_as_json():
    result = run("enqueue", "hello", '{"to": "a@b.c"}', "--in", "5")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["name"] == "hello" and job["args"] == {"to": "a@b.c"}
    assert job["run_at"] - job["enqueued_at"] == pytest.approx(5, abs=0.5)


def test_info_on_an_empty_queue_shows_empty_tables():
    result = run("info")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(none)") == 3


def test_dead_retry_of_an_unknown_id_is_one_line():
    one_line_error(run("dead", "retry", "nope"), 2, "no dead job with id 'nope'")
