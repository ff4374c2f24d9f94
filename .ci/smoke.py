"""Smoke test of an installed workhorse (a wheel, or the sdist built by pip), run outside the tree.

Used by .ci/run and .github/workflows/release.yml: `python .ci/smoke.py` in a virtualenv that has
only workhorse installed.
"""

from __future__ import annotations

import importlib.metadata
import sysconfig
from pathlib import Path

import workhorse as wh
from workhorse import _core

site_packages = Path(sysconfig.get_paths()["platlib"]).resolve()
assert site_packages in Path(_core.__file__).resolve().parents, f"not installed: {_core.__file__}"
assert wh.__version__ == importlib.metadata.version("workhorse"), wh.__version__

w = wh.Worker()
w.register("ping", lambda job: None)
with w:
    assert w.perform(wh.Job("ping"), sync=True) == wh.Status.SUCCESS
    assert w.perform(wh.Job("ping")).wait(5) == wh.Status.SUCCESS
    timer = w.perform_in(wh.Job("ping"), 0.01)  # the core's timer thread
    assert timer.wait(5) and timer.execution is not None
    assert timer.execution.status == wh.Status.SUCCESS
print(f"workhorse {wh.__version__} OK: {_core.__file__}")

# The dashboard's static files travel in the wheel and the sdist (maturin ships python/workhorse).
import urllib.request  # noqa: E402

from workhorse.web import serve_dashboard  # noqa: E402

with serve_dashboard(wh.Queue.from_url("memory://"), port=0) as server:
    for path in ("/", "/static/app.js", "/static/style.css", "/api/queues"):
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            assert response.status == 200 and response.read(), path
print("dashboard OK")
