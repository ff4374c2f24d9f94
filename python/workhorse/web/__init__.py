"""The dashboard: queues, busy workers, worker pools, scheduled/retry/dead jobs, a live chart.

    from workhorse.web import serve_dashboard
    server = serve_dashboard(queue, port=5040)            # http://127.0.0.1:5040/
    server = serve_dashboard(queue, host="0.0.0.0", auth="admin:s3cret", read_only=True)
    server.close()

or beside /metrics: `workhorse.server.serve(port=9090, dashboard=queue)`, or from the shell:
`workhorse --url redis://... web`. Plain stdlib HTTP (http.server) and hand-written static
files; the page reads the JSON API under /api (api.py). Security rules: security.py.
"""

from __future__ import annotations

from workhorse.web.app import Dashboard, InsecureBind
from workhorse.web.server import DEFAULT_PORT, serve_dashboard

__all__ = ["DEFAULT_PORT", "Dashboard", "InsecureBind", "serve_dashboard"]
