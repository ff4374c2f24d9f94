// workhorse dashboard: plain JavaScript, no build step, no outside resources.
//
// One page, routed by the location hash (#/queues, #/busy, #/workers, #/scheduled, #/retry,
// #/dead?page=2). Everything it shows comes from the JSON API under api/ (relative, so the
// dashboard works at any mount point). Data is put in the page with textContent only: job
// arguments and errors are other people's text. State-changing calls send the page's CSRF
// token (meta csrf-token); with meta read-only = true no buttons are drawn.
"use strict";

(() => {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : "";
  };
  const CSRF_TOKEN = meta("csrf-token");
  const READ_ONLY = meta("read-only") === "true";
  const STATS_EVERY_MS = 1000; // the chart's resolution
  const PAGE_EVERY_MS = 2000; // tables
  const CHART_WINDOW = 60; // samples kept: a minute at one per second
  const LATE_HEARTBEAT_S = 20; // workers beat every 5 s: four missed beats is late

  const main = document.getElementById("main");
  const banner = document.getElementById("banner");
  const toast = document.getElementById("toast");

  // -- small helpers --------------------------------------------------------------------------

  // h("td", {class: "num", data: {col: "ready"}}, "3"): an element; strings become text nodes.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "data") for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch("api/" + path, {
        credentials: "same-origin",
        cache: "no-store",
        ...options,
        headers: { Accept: "application/json", ...((options && options.headers) || {}) },
      });
    } catch (err) {
      throw new ApiFailure(0, "cannot reach the dashboard server");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : `HTTP ${response.status}`;
      throw new ApiFailure(response.status, message);
    }
    return body;
  }

  function change(method, path) {
    return api(path, { method, headers: { "X-CSRF-Token": CSRF_TOKEN } });
  }

  // Seconds on the server's clock: the browser's clock corrected by the last stats sample.
  let clockOffset = 0;
  const now = () => Date.now() / 1000 + clockOffset;

  function duration(seconds) {
    const s = Math.max(0, seconds);
    if (s < 1) return `${s.toFixed(2)} s`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function relative(epoch) {
    const delta = epoch - now();
    if (Math.abs(delta) < 1) return "now";
    return delta > 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
  }

  // A time cell: relative text, refreshed every second by tickTimes(); the exact time on hover.
  function timeCell(epoch) {
    if (epoch === null || epoch === undefined) return h("td", { class: "time zero" }, "-");
    return h(
      "td",
      { class: "time", title: new Date(epoch * 1000).toLocaleString(), data: { epoch: String(epoch) } },
      relative(epoch),
    );
  }

  function tickTimes() {
    for (const el of main.querySelectorAll("[data-epoch]")) {
      el.textContent = relative(Number(el.dataset.epoch));
    }
  }

  const integer = new Intl.NumberFormat();
  function numCell(value, col) {
    return h("td", { class: value ? "num" : "num zero", data: { col } }, integer.format(value));
  }

  function rate(value) {
    return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  function truncated(text, limit) {
    return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
  }

  let toastTimer = null;
  function notify(message, isError) {
    toast.textContent = message;
    toast.className = isError ? "toast error" : "toast";
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (toast.hidden = true), isError ? 6000 : 3000);
  }

  function showProblem(err) {
    if (!err) {
      banner.hidden = true;
      banner.textContent = "";
      return;
    }
    const text =
      err.status === 401
        ? "Not signed in (401): reload the page to sign in."
        : err.status === 503
          ? `The queue cannot be reached: ${err.message}`
          : `Error: ${err.message}`;
    banner.textContent = text;
    banner.hidden = false;
  }

  // A button that calls the API, reports the answer and refreshes the page.
  function actionButton(label, cls, method, path, done, confirmText) {
    return h(
      "button",
      {
        type: "button",
        class: cls,
        onclick: async (event) => {
          if (confirmText && !window.confirm(confirmText)) return;
          const button = event.currentTarget;
          button.disabled = true;
          try {
            const answer = await change(method, path);
            notify(done(answer), false);
          } catch (err) {
            notify(err.message, true);
          }
          button.disabled = false;
          refreshNow();
        },
      },
      label,
    );
  }

  // -- live chart: processed and failed jobs per second --------------------------------------

  const samples = []; // {time, processed, failed} from api/stats
  let lastStats = null;

  function rates() {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const dt = b.time - a.time;
      if (dt <= 0) continue;
      // A counter that went down (Redis flushed) is a restart, not a negative rate.
      out.push({
        time: b.time,
        processed: Math.max(0, b.processed - a.processed) / dt,
        failed: Math.max(0, b.failed - a.failed) / dt,
      });
    }
    return out;
  }

  function niceMax(value) {
    if (value <= 1) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart() {
    const canvas = document.getElementById("chart");
    if (!canvas) return;
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const series = rates();
    const left = 48;
    const right = 16;
    const top = 8;
    const bottom = 22;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const peak = niceMax(Math.max(0, ...series.map((r) => Math.max(r.processed, r.failed))));

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");
    ctx.strokeStyle = color("--line");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = Math.round(top + plotH - (plotH * i) / 4) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
      ctx.stroke();
      const value = (peak * i) / 4;
      ctx.fillText(Number.isInteger(value) ? String(value) : value.toFixed(1), left - 8, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    const span = CHART_WINDOW * (STATS_EVERY_MS / 1000);
    for (const back of [span, span * 0.75, span / 2, span / 4, 0]) {
      const x = left + plotW - (plotW * back) / span;
      ctx.textAlign = back === 0 ? "right" : back === span ? "left" : "center";
      ctx.fillText(back === 0 ? "now" : `-${Math.round(back)}s`, x, height - 6);
    }

    const end = series.length ? series[series.length - 1].time : now();
    const xOf = (t) => left + plotW - (plotW * (end - t)) / span;
    const yOf = (v) => top + plotH - (plotH * v) / peak;
    const visible = series.filter((r) => end - r.time <= span);
    const line = (key, stroke, fill) => {
      if (visible.length < 1) return;
      ctx.beginPath();
      visible.forEach((r, i) => (i ? ctx.lineTo(xOf(r.time), yOf(r[key])) : ctx.moveTo(xOf(r.time), yOf(r[key]))));
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
      if (fill) {
        ctx.lineTo(xOf(visible[visible.length - 1].time), top + plotH);
        ctx.lineTo(xOf(visible[0].time), top + plotH);
        ctx.closePath();
        ctx.fillStyle = fill;
        ctx.fill();
      }
    };
    line("processed", color("--accent"), color("--accent-soft"));
    line("failed", color("--danger"), null);
    // For tests and curious people: what was drawn.
    canvas.dataset.points = String(visible.length);
    canvas.dataset.peak = String(peak);

    const latest = series.length ? series[series.length - 1] : { processed: 0, failed: 0 };
    const legendProcessed = document.getElementById("rate-processed");
    const legendFailed = document.getElementById("rate-failed");
    if (legendProcessed) legendProcessed.textContent = rate(latest.processed);
    if (legendFailed) legendFailed.textContent = rate(latest.failed);
    fillTiles();
  }

  function fillTiles() {
    const series = rates();
    const latest = series.length ? series[series.length - 1] : null;
    const set = (id, text) => {
      const el = document.getElementById(id);
      if (el) el.textContent = text;
    };
    if (lastStats) {
      set("tile-processed", integer.format(lastStats.processed));
      set("tile-failed", integer.format(lastStats.failed));
    }
    set("tile-processed-rate", latest ? rate(latest.processed) : "-");
    set("tile-failed-rate", latest ? rate(latest.failed) : "-");
  }

  async function pollStats() {
    try {
      const stats = await api("stats");
      lastStats = stats;
      clockOffset = stats.time - Date.now() / 1000;
      samples.push({ time: stats.time, processed: stats.processed, failed: stats.failed });
      while (samples.length > CHART_WINDOW + 1) samples.shift();
      drawChart();
    } catch (err) {
      // The page's own refresh reports problems; the chart just has a gap.
    }
    setTimeout(pollStats, STATS_EVERY_MS);
  }

  // -- pages ----------------------------------------------------------------------------------

  function table(headers, rows, emptyText) {
    if (!rows.length) return h("div", { class: "empty" }, emptyText);
    return h(
      "table",
      {},
      h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { class: cls }, text)))),
      h("tbody", {}, rows),
    );
  }

  function queuesPage(data) {
    const queues = data.queues;
    const sum = (key) => queues.reduce((n, q) => n + q[key], 0);
    const tile = (label, id, value, cls) =>
      h("div", { class: "tile " + (cls || "") }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
    const rows = queues.map((q) =>
      h(
        "tr",
        { data: { queue: q.name } },
        h("td", { class: "name" }, q.name),
        numCell(q.ready, "ready"),
        numCell(q.running, "running"),
        numCell(q.scheduled, "scheduled"),
        numCell(q.retry, "retry"),
        numCell(q.dead, "dead"),
        h("td", { class: q.ready ? "num" : "num zero", data: { col: "latency" } }, q.ready ? duration(q.latency) : "-"),
        h(
          "td",
          { data: { col: "state" } },
          q.paused
            ? h("span", { class: "pill paused" }, "paused")
            : q.running
              ? h("span", { class: "pill running" }, "running")
              : h("span", { class: "pill" }, "active"),
        ),
        READ_ONLY
          ? null
          : h(
              "td",
              { class: "actions" },
              q.paused
                ? actionButton("Unpause", "", "POST", `queues/${encodeURIComponent(q.name)}/unpause`, () => `Unpaused ${q.name}`)
                : actionButton("Pause", "", "POST", `queues/${encodeURIComponent(q.name)}/pause`, () => `Paused ${q.name}: no worker claims it now`),
            ),
      ),
    );
    const headers = [
      ["Queue"],
      ["Ready", "num"],
      ["Running", "num"],
      ["Scheduled", "num"],
      ["Retry", "num"],
      ["Dead", "num"],
      ["Latency", "num"],
      ["State"],
    ];
    if (!READ_ONLY) headers.push(["", "num"]);
    const rateNow = (key) => {
      const series = rates();
      return series.length ? rate(series[series.length - 1][key]) : "-";
    };
    return [
      h("h1", {}, "Queues", h("span", { class: "sub" }, "one queue per job name")),
      h(
        "div",
        { class: "tiles" },
        tile("Processed", "tile-processed", lastStats ? integer.format(lastStats.processed) : "-"),
        tile("Failed", "tile-failed", lastStats ? integer.format(lastStats.failed) : "-", "failed"),
        tile("Processed / s", "tile-processed-rate", rateNow("processed")),
        tile("Failed / s", "tile-failed-rate", rateNow("failed"), "failed"),
        tile("Ready", "tile-ready", integer.format(sum("ready"))),
        tile("Running", "tile-running", integer.format(sum("running"))),
      ),
      h(
        "section",
        { class: "panel" },
        h(
          "div",
          { class: "chart-head" },
          h("h2", {}, "Throughput"),
          h(
            "div",
            { class: "legend" },
            h("span", {}, "processed/s ", h("b", { id: "rate-processed" }, rateNow("processed"))),
            h("span", { class: "failed" }, "failed/s ", h("b", { id: "rate-failed" }, rateNow("failed"))),
          ),
        ),
        h("canvas", { id: "chart", class: "chart", role: "img", "aria-label": "processed and failed jobs per second" }),
      ),
      h("section", { class: "panel flush" }, table(headers, rows, "No queues yet: enqueue a job and its name shows up here.")),
    ];
  }

  function busyPage(data) {
    const rows = data.busy.map((b) =>
      h(
        "tr",
        { data: { job: b.job_id } },
        h("td", { class: "name" }, b.name),
        h("td", {}, h("code", {}, b.job_id)),
        h("td", {}, h("code", { title: b.worker_id }, truncated(b.worker_id, 28))),
        timeCell(b.started_at),
        h("td", { data: { col: "checkin" } }, b.checkin === null ? "-" : b.checkin),
        timeCell(b.checkin_at),
      ),
    );
    return [
      h("h1", {}, "Busy workers", h("span", { class: "sub" }, `${data.busy.length} running now`)),
      h(
        "section",
        { class: "panel flush" },
        table([["Job name"], ["Job"], ["Worker"], ["Started"], ["Check-in"], ["Checked in"]], rows, "No job is running."),
      ),
    ];
  }

  function workersPage(data) {
    const t = now();
    const rows = data.pools.map((p) =>
      h(
        "tr",
        { data: { worker: p.worker_id } },
        h("td", {}, h("code", { title: p.worker_id }, truncated(p.worker_id, 32))),
        h("td", {}, p.host),
        h("td", { class: "num" }, String(p.pid)),
        h("td", { class: "num" }, String(p.concurrency)),
        h("td", {}, p.names.length ? p.names.join(", ") : "-"),
        timeCell(p.started_at),
        h(
          "td",
          { class: "time" },
          h("span", { data: { epoch: String(p.heartbeat_at) }, title: new Date(p.heartbeat_at * 1000).toLocaleString() }, relative(p.heartbeat_at)),
          t - p.heartbeat_at > LATE_HEARTBEAT_S ? h("span", { class: "pill late" }, " late") : null,
        ),
      ),
    );
    return [
      h("h1", {}, "Worker pools", h("span", { class: "sub" }, "each started Worker beats every 5 s")),
      h(
        "section",
        { class: "panel flush" },
        table(
          [["Worker"], ["Host"], ["PID", "num"], ["Concurrency", "num"], ["Job names"], ["Started"], ["Heartbeat"]],
          rows,
          "No worker is running on this queue.",
        ),
      ),
    ];
  }

  const SET_TITLES = { scheduled: "Scheduled jobs", retry: "Retry jobs", dead: "Dead jobs" };
  const SET_EMPTY = {
    scheduled: "No job is scheduled.",
    retry: "No job is waiting to be retried.",
    dead: "No dead jobs.",
  };

  function jobsPage(which, data) {
    const plural = (n) => `${integer.format(n)} job${n === 1 ? "" : "s"}`;
    const rows = data.jobs.map((job) => {
      const args = JSON.stringify(job.args);
      const problem = which === "dead" ? job.reason || job.last_error : job.last_error;
      const actions = [];
      if (!READ_ONLY) {
        const id = encodeURIComponent(job.id);
        if (which === "dead") {
          actions.push(actionButton("Retry", "", "POST", `dead/${id}/retry`, () => `Retried ${job.name} (${job.id})`));
        }
        actions.push(actionButton("Delete", "danger", "DELETE", `${which}/${id}`, () => `Deleted ${job.name} (${job.id})`));
      }
      return h(
        "tr",
        { data: { job: job.id } },
        h("td", { class: "name" }, job.name),
        h("td", {}, h("code", {}, job.id)),
        h("td", { class: "args", title: args }, h("code", {}, truncated(args, 90))),
        h("td", { class: "num" }, String(job.fails)),
        timeCell(which === "dead" ? job.died_at : job.run_at),
        h("td", { class: "error", title: problem || "" }, problem ? truncated(problem, 160) : ""),
        READ_ONLY ? null : h("td", { class: "actions" }, actions),
      );
    });
    const headers = [["Job name"], ["Job"], ["Arguments"], ["Fails", "num"], [which === "dead" ? "Died" : "Runs"], [which === "dead" ? "Reason" : "Last error"]];
    if (!READ_ONLY) headers.push(["", "num"]);
    const bulk = [];
    if (!READ_ONLY && data.total > 0) {
      if (which === "dead") {
        bulk.push(
          actionButton("Retry all", "primary", "POST", "dead/retry-all", (a) => `Retried ${plural(a.retried)}`, `Retry all ${plural(data.total)}?`),
        );
      }
      bulk.push(
        actionButton("Delete all", "danger", "POST", `${which}/delete-all`, (a) => `Deleted ${plural(a.deleted)}`, `Delete all ${plural(data.total)}? This cannot be undone.`),
      );
    }
    const go = (page) => () => {
      location.hash = `#/${which}?page=${page}`;
    };
    const pager = h(
      "div",
      { class: "pager" },
      `Page ${data.page} of ${data.pages}`,
      h("button", { type: "button", disabled: data.page <= 1, onclick: go(data.page - 1) }, "‹ Previous"),
      h("button", { type: "button", disabled: data.page >= data.pages, onclick: go(data.page + 1) }, "Next ›"),
    );
    return [
      h("h1", {}, SET_TITLES[which], h("span", { class: "sub", data: { total: String(data.total) } }, plural(data.total)), h("div", { class: "toolbar" }, bulk)),
      h("section", { class: "panel flush" }, table(headers, rows, SET_EMPTY[which]), data.pages > 1 ? pager : null),
    ];
  }

  // -- routing and refreshing ------------------------------------------------------------------

  function currentRoute() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [name, query] = raw.split("?");
    const params = new URLSearchParams(query || "");
    const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    const known = ["queues", "busy", "workers", "scheduled", "retry", "dead"];
    return { name: known.includes(name) ? name : "queues", page };
  }

  const PAGES = {
    queues: { load: () => api("queues"), render: queuesPage },
    busy: { load: () => api("busy"), render: busyPage },
    workers: { load: () => api("pools"), render: workersPage },
    scheduled: { load: (r) => api(`jobs/scheduled?page=${r.page}`), render: (d) => jobsPage("scheduled", d) },
    retry: { load: (r) => api(`jobs/retry?page=${r.page}`), render: (d) => jobsPage("retry", d) },
    dead: { load: (r) => api(`jobs/dead?page=${r.page}`), render: (d) => jobsPage("dead", d) },
  };

  let shown = ""; // route and data of what is on screen: an unchanged answer is not redrawn
  let timer = null;
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    const route = currentRoute();
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("active", link.dataset.page === route.name);
    }
    try {
      const [data, queues] = await Promise.all([
        PAGES[route.name].load(route),
        route.name === "queues" ? null : api("queues"),
      ]);
      if (mine !== generation) return; // a newer refresh started meanwhile
      updateBadges(route.name === "queues" ? data : queues);
      const key = route.name + ":" + route.page + ":" + JSON.stringify(data);
      if (key !== shown) {
        shown = key;
        main.replaceChildren(...PAGES[route.name].render(data));
        main.dataset.page = route.name;
        drawChart();
      }
      showProblem(null);
    } catch (err) {
      if (mine !== generation) return;
      showProblem(err);
    }
    timer = setTimeout(refresh, PAGE_EVERY_MS);
  }

  function refreshNow() {
    shown = "";
    refresh();
  }

  function updateBadges(data) {
    if (!data) return;
    const sum = (key) => data.queues.reduce((n, q) => n + q[key], 0);
    for (const el of document.querySelectorAll("[data-count]")) {
      const key = el.dataset.count === "busy" ? "running" : el.dataset.count;
      const n = sum(key);
      el.textContent = n ? integer.format(n) : "";
      el.classList.toggle("alert", key === "dead" && n > 0);
    }
  }

  async function showWhere() {
    try {
      const info = await api("info");
      const where = document.getElementById("where");
      where.replaceChildren(
        h("div", {}, h("code", {}, info.url), " · namespace ", h("code", {}, info.namespace)),
        h("div", {}, `workhorse ${info.version} `, info.read_only ? h("span", { class: "pill ro" }, "read-only") : null),
      );
    } catch (err) {
      showProblem(err);
    }
  }

  window.addEventListener("hashchange", refreshNow);
  window.addEventListener("resize", drawChart);
  setInterval(tickTimes, 1000);
  showWhere();
  refresh();
  pollStats();
})();
