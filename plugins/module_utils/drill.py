# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback drill: samples of the queues while it runs, and the report it ends with.

The samples (queue_sampler) are JSON lines: ``{"t": <epoch>, "depth": {queue: n}, "started": n,
"finished": n, "failed": n}``, counts being totals so far (None when not known), and a last line
``{"end": <epoch>}``. Exact task counts come from a *ledger*, when the task code keeps one (the
collection's sample app does): ``queueops:ledger:enqueued`` (set of the task tokens the producer
enqueued), ``queueops:ledger:done`` and ``queueops:ledger:failed`` (hashes token -> runs finished /
failed) and ``queueops:ledger:starts`` (list of JSON ``{"token", "release", "worker", "t"}``). Without a
ledger, RQ's finished and failed registries give the trend and the report says the counts are unknown.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils import rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM
from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text

LEDGER_ENQUEUED = "queueops:ledger:enqueued"
LEDGER_DONE = "queueops:ledger:done"
LEDGER_FAILED = "queueops:ledger:failed"
LEDGER_STARTS = "queueops:ledger:starts"
PHASE_ORDER = ("pause", "drain", "switch", "restart", "gate", "rollback", "replay", "resume", "verify")


# --- sampling (queue_sampler) ---


def has_ledger(client) -> bool:
    return bool(client.exists(LEDGER_ENQUEUED))


def sample(client, backend: str, queues: list[str], ledger: bool) -> dict[str, Any]:
    """One sample: depth of each queue, and total tasks started, finished and failed so far."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(rq_backend.queue_key(queue) if backend == "rq" else queue)
        if ledger:
            pipe.llen(LEDGER_STARTS)
            pipe.hlen(LEDGER_DONE)
            pipe.hlen(LEDGER_FAILED)
        elif backend == "rq":
            for queue in queues:
                pipe.zcard(rq_backend.registry_key("finished", queue))
                pipe.zcard(rq_backend.registry_key("failed", queue))
        replies = pipe.execute()
    found: dict[str, Any] = {"t": round(time.time(), 3), "depth": dict(zip(queues, replies[: len(queues)]))}
    rest = replies[len(queues) :]
    if ledger:
        found.update(started=rest[0], finished=rest[1], failed=rest[2])
    elif backend == "rq":
        found.update(started=None, finished=sum(rest[0::2]), failed=sum(rest[1::2]))
    else:
        found.update(started=None, finished=None, failed=None)
    return found


def read_samples(path: str) -> tuple[list[dict], bool]:
    """The samples of a sampler's file, and whether the sampler wrote its last line."""
    samples, ended = [], False
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a sampler that was stopped while it wrote
                if "end" in entry:
                    ended = True
                elif "t" in entry:
                    samples.append(entry)
    except FileNotFoundError:
        pass
    return samples, ended


# --- the report (drill_report) ---


def ledger_counts(client) -> dict[str, Any]:
    enqueued = {as_text(t) for t in client.smembers(LEDGER_ENQUEUED)}
    done = {as_text(t): int(n) for t, n in client.hgetall(LEDGER_DONE).items()}
    failed = {as_text(t): int(n) for t, n in client.hgetall(LEDGER_FAILED).items()}
    return {
        "enqueued": len(enqueued),
        "finished": len(enqueued & set(done)),
        "failed": len(failed),
        "replayed": len(set(failed) & set(done)),
        "lost": len(enqueued - set(done)),
        "duplicated": sum(1 for n in done.values() if n > 1),
        "lost_tokens": sorted(enqueued - set(done))[:20],
    }


def settle_ledger(client, timeout: float, poll: float = 0.5) -> dict[str, Any]:
    """Ledger counts once everything enqueued finished, or at ``timeout`` (what is missing then is lost)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = ledger_counts(client)
        if counts["lost"] == 0 or time.monotonic() >= deadline:
            counts["settled"] = counts["lost"] == 0
            return counts
        time.sleep(poll)


def ledger_starts(client, since: float) -> list[dict]:
    starts = []
    for raw in client.lrange(LEDGER_STARTS, 0, -1):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if float(entry.get("t", 0)) >= since:
            starts.append(entry)
    return starts


def read_events(client, since: float, until: float) -> list[dict[str, str]]:
    entries = client.xrange(EVENTS_STREAM, min=f"{int(since * 1000)}-0", max=f"{int(until * 1000) + 1}-0")
    return [
        dict({as_text(k): as_text(v) for k, v in fields.items()}, id=as_text(event_id)) for event_id, fields in entries
    ]


def verdict_time(events: list[dict[str, str]], bad: str) -> float | None:
    """When the health gate judged release ``bad`` unhealthy (the last such verdict)."""
    times = [float(e["time"]) for e in events if e.get("module") == "rollout_check" and e.get("release") == bad
             and e.get("action") == "unhealthy"]  # fmt: skip
    return max(times) if times else None


def recovery_times(
    starts: list[dict], verdict: float | None, good: str, bad: str, workers: int
) -> dict[str, float | None]:
    """From the ledger: detect (the bad release's first task -> the verdict) and recover (the verdict
    -> every one of ``workers`` workers of ``good`` has started a task), in seconds."""
    bad_starts = sorted(float(s["t"]) for s in starts if s.get("release") == bad)
    found: dict[str, float | None] = {"detect_s": None, "recover_s": None, "bad_tasks_after_verdict": None}
    if verdict is None:
        return found
    if bad_starts:
        found["detect_s"] = round(verdict - bad_starts[0], 2)
    firsts: dict[str, float] = {}
    for entry in sorted(starts, key=lambda s: float(s["t"])):
        if entry.get("release") == good and float(entry["t"]) > verdict:
            firsts.setdefault(entry.get("worker", ""), float(entry["t"]))
    if workers and len(firsts) >= workers:
        found["recover_s"] = round(sorted(firsts.values())[workers - 1] - verdict, 2)
    found["bad_tasks_after_verdict"] = sum(1 for t in bad_starts if t > verdict)
    return found


def timeline_times(timeline: dict | None, verdict: float | None, good: str) -> dict[str, float | None]:
    """Without a ledger, from the timeline callback's record: the rollback's wait for release ``good``."""
    if not timeline or verdict is None:
        return {}
    ends = [
        _epoch(t["end"])
        for t in timeline.get("tasks", [])
        if t.get("phase") == "rollback" and t.get("task", "").startswith("Wait until its workers consume")
        and t.get("task", "").endswith(good) and t.get("outcome") in ("ok", "changed")
    ]  # fmt: skip
    return {"recover_s": round(max(ends) - verdict, 2)} if ends else {}


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def phase_bands(timeline: dict | None, since: float) -> list[dict[str, Any]]:
    """Per host and phase, the spans of its tasks (from the timeline callback), merged when they touch."""
    if not timeline:
        return []
    spans: dict[tuple[str, str], list[list[float]]] = {}
    for task in timeline.get("tasks", []):
        if not task.get("phase") or task.get("outcome") == "skipped":
            continue
        start, end = _epoch(task["start"]), _epoch(task["end"])
        if end < since:
            continue
        runs = spans.setdefault((task["host"], task["phase"]), [])
        if runs and start - runs[-1][1] < 1.5:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [
        {"host": host, "phase": phase, "start": round(start, 3), "end": round(end, 3)}
        for (host, phase), runs in sorted(spans.items())
        for start, end in runs
    ]


def build_report(
    *,
    params: dict[str, Any],
    samples: list[dict],
    events: list[dict[str, str]],
    counts: dict[str, Any] | None,
    starts: list[dict],
    timeline: dict | None,
    fleet: list[dict],
    finished_at: float,
) -> dict[str, Any]:
    good, bad = params["good_release"], params["bad_release"]
    verdict = verdict_time(events, bad)
    times = recovery_times(starts, verdict, good, bad, params["workers_expected"]) if counts else {}
    if counts and times.get("recover_s") is None:
        times.update({k: v for k, v in timeline_times(timeline, verdict, good).items() if v is not None})
    elif not counts:
        times = timeline_times(timeline, verdict, good)
    fleet = [dict(h, host=h.get("host") or "(a host that failed before the end)") for h in fleet]
    on_good = [h for h in fleet if h.get("current") == good]
    problems = []
    if counts and counts["lost"]:
        problems.append(f"{counts['lost']} task(s) lost")
    if len(on_good) != len(fleet) or not fleet:
        problems.append(f"{len(fleet) - len(on_good)} of {len(fleet)} host(s) not on {good}")
    if not params["rolled_back"]:
        problems.append(f"the deploy of {bad} did not roll back by itself")
    paused = [h["host"] for h in fleet if h.get("paused")]
    if paused:
        problems.append(f"queues left paused (seen from {', '.join(paused)})")
    if problems:
        verdict_line = "FAILED: " + "; ".join(problems)
    else:
        detect = times.get("detect_s")
        recover = times.get("recover_s")
        verdict_line = (
            f"PASSED: {bad} was caught by the health gate"
            + (f" {detect:g} s after its first task" if detect is not None else "")
            + f" and the fleet is back on {good}"
            + (f" {recover:g} s after the verdict" if recover is not None else "")
            + (f", {counts['lost']} tasks lost" if counts else ", task counts unknown (no ledger)")
        )
    return {
        "version": 1,
        "drill": {
            "pool": params["pool"],
            "backend": params["backend"],
            "queues": params["queues"],
            "good_release": good,
            "bad_release": bad,
            "started": round(params["started"], 3),
            "finished": round(finished_at, 3),
            "awx": params.get("awx") or {},
        },
        "passed": not problems,
        "verdict": verdict_line,
        "problems": problems,
        "gate_verdict_at": verdict,
        "times": times,
        "tasks": {k: v for k, v in (counts or {}).items()},
        "fleet": fleet,
        "rollback_message": params.get("deploy_message") or "",
        "phases": phase_bands(timeline, params["started"]),
        "events": [
            {"t": float(e["time"]), "module": e.get("module"), "action": e.get("action"), "release": e.get("release")}
            for e in events
        ],
        "samples": samples,
    }


def text_report(report: dict[str, Any]) -> str:
    drill, tasks, times = report["drill"], report["tasks"], report["times"]

    def seconds(value):
        return "n/a" if value is None else f"{value:g} s"

    lines = [
        f"Rollback drill of pool {drill['pool']} ({drill['backend']}): {drill['good_release']} -> "
        f"{drill['bad_release']} -> back to {drill['good_release']}",
        f"  time to detect:  {seconds(times.get('detect_s'))} (the bad release's first task -> the gate's verdict)",
        f"  time to recover: {seconds(times.get('recover_s'))} (the verdict -> every worker consuming on "
        f"{drill['good_release']})",
    ]
    if tasks:
        lines.append(
            "  tasks: {enqueued} enqueued, {finished} finished, {failed} failed by the bad release, "
            "{replayed} replayed, {lost} lost, {duplicated} duplicated".format(**tasks)
        )
    else:
        lines.append("  tasks: counts unknown (the task code keeps no ledger)")
    lines.append("  hosts: " + ", ".join(f"{h['host']} on {h.get('current')}" for h in report["fleet"]))
    lines.append(report["verdict"])
    return "\n".join(lines)


def write_report(report: dict[str, Any], dest: str) -> dict[str, str]:
    os.makedirs(dest, exist_ok=True)
    paths = {"json": os.path.join(dest, "report.json"), "html": os.path.join(dest, "report.html")}
    for kind, content in (("json", json.dumps(report, indent=1)), ("html", render_html(report))):
        partial = paths[kind] + ".partial"
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(partial, paths[kind])
    return paths


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: no network, the data inline, the timeline drawn by the page itself."""
    data = json.dumps(report).replace("</", "<\\/")
    title = html.escape(f"Rollback drill: {report['drill']['pool']} {report['drill']['bad_release']}")
    return _PAGE.replace("__TITLE__", title).replace("__DATA__", data)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2433; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #5b6577; margin-bottom: 16px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin-bottom: 16px; }
.passed { background: #e3f6ea; color: #14532d; } .failed { background: #fde4e4; color: #7f1d1d; }
table { border-collapse: collapse; margin-bottom: 16px; } td, th { padding: 4px 12px; text-align: left; }
th { color: #5b6577; font-weight: 500; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 12px;
height: 12px; margin-right: 4px; vertical-align: -1px; border-radius: 2px; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6577; }
</style></head><body>
<h1 id="title"></h1><div class="sub" id="sub"></div>
<div id="verdict" class="verdict"></div>
<table id="counts"><tbody></tbody></table>
<div class="legend" id="legend"></div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="1200" height="10"></svg>
<script type="application/json" id="report-data">__DATA__</script>
<script>
(function () {
  var r = JSON.parse(document.getElementById("report-data").textContent);
  var COLORS = {pause: "#f4a261", drain: "#e9c46a", "switch": "#2a9d8f", restart: "#264653", gate: "#8338ec",
                rollback: "#e63946", replay: "#3a86ff", resume: "#06d6a0", verify: "#adb5bd"};
  var d = r.drill, t = r.tasks || {}, s = r.times || {};
  var fmt = function (v, unit) { return v === null || v === undefined ? "n/a" : v + (unit || ""); };
  document.getElementById("title").textContent = "Rollback drill: pool " + d.pool + " (" + d.backend + ")";
  document.getElementById("sub").textContent = d.good_release + " \\u2192 " + d.bad_release + " \\u2192 back to " +
    d.good_release + " \\u00b7 started " + new Date(d.started * 1000).toISOString() +
    (d.awx && d.awx.job_id ? " \\u00b7 AWX job " + d.awx.job_id + " by " + (d.awx.user || "?") : "");
  var v = document.getElementById("verdict");
  v.textContent = r.verdict; v.className = "verdict " + (r.passed ? "passed" : "failed");
  var rows = [["detect", "Time to detect", fmt(s.detect_s, " s")],
              ["recover", "Time to recover", fmt(s.recover_s, " s")],
              ["enqueued", "Enqueued", fmt(t.enqueued)], ["finished", "Finished", fmt(t.finished)],
              ["failed", "Failed by " + d.bad_release, fmt(t.failed)], ["replayed", "Replayed", fmt(t.replayed)],
              ["lost", "Lost", fmt(t.lost)], ["duplicated", "Duplicated", fmt(t.duplicated)]];
  var body = document.querySelector("#counts tbody");
  rows.forEach(function (row) {
    var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
    th.textContent = row[1]; td.textContent = row[2]; td.className = "n"; td.id = "count-" + row[0];
    tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
  });
  var legend = document.getElementById("legend");
  Object.keys(COLORS).forEach(function (p) {
    var span = document.createElement("span"), i = document.createElement("i");
    i.style.background = COLORS[p]; span.appendChild(i); span.appendChild(document.createTextNode(p));
    legend.appendChild(span);
  });
  var NS = "http://www.w3.org/2000/svg", svg = document.getElementById("timeline");
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    svg.appendChild(e); return e;
  }
  var samples = r.samples || [], phases = r.phases || [];
  var t0 = d.started, t1 = d.finished;
  samples.forEach(function (p) { t0 = Math.min(t0, p.t); t1 = Math.max(t1, p.t); });
  var L = 110, W = 1200 - L - 20, x = function (tt) { return L + (tt - t0) / Math.max(t1 - t0, 1) * W; };
  var y = 20, H = 120;
  // Queue depth.
  var depth = samples.map(function (p) { var n = 0; for (var q in p.depth) { n += p.depth[q]; } return n; });
  var dmax = Math.max.apply(null, depth.concat([1]));
  el("text", {x: 4, y: y + 12}, "queue depth"); el("text", {x: 4, y: y + 26}, "max " + dmax);
  el("rect", {x: L, y: y, width: W, height: H, fill: "#f6f7f9"});
  var pts = samples.map(function (p, i) { return x(p.t).toFixed(1) + "," + (y + H - depth[i] / dmax * H).toFixed(1); });
  if (pts.length) {
    el("polyline", {id: "depth", points: pts.join(" "), fill: "none", stroke: "#1d4ed8", "stroke-width": 2});
  }
  y += H + 16;
  // Task outcomes per second: finished (green) and failed (red) between samples.
  var rates = [], rmax = 1;
  for (var i = 1; i < samples.length; i++) {
    var a = samples[i - 1], b = samples[i], dt = Math.max(b.t - a.t, 0.001);
    var fin = a.finished === null || b.finished === null ? 0 : Math.max(b.finished - a.finished, 0) / dt;
    var fai = a.failed === null || b.failed === null ? 0 : Math.max(b.failed - a.failed, 0) / dt;
    rates.push([a.t, b.t, fin, fai]); rmax = Math.max(rmax, fin + fai);
  }
  el("text", {x: 4, y: y + 12}, "tasks / s"); el("text", {x: 4, y: y + 26}, "max " + Math.round(rmax));
  el("rect", {x: L, y: y, width: W, height: H, fill: "#f6f7f9"});
  rates.forEach(function (q) {
    var w = Math.max(x(q[1]) - x(q[0]), 1), hf = q[2] / rmax * H, hx = q[3] / rmax * H;
    if (hf > 0) {
      el("rect", {"class": "finished", x: x(q[0]), y: y + H - hf, width: w, height: hf, fill: "#16a34a"});
    }
    if (hx > 0) {
      el("rect", {"class": "failed", x: x(q[0]), y: y + H - hf - hx, width: w, height: hx, fill: "#dc2626"});
    }
  });
  y += H + 16;
  // Phases, one row per host.
  var hosts = [];
  phases.forEach(function (p) { if (hosts.indexOf(p.host) < 0) { hosts.push(p.host); } });
  hosts.sort();
  hosts.forEach(function (h, row) {
    var top = y + row * 26;
    el("text", {x: 4, y: top + 15}, h);
    el("rect", {x: L, y: top, width: W, height: 20, fill: "#f6f7f9"});
    phases.filter(function (p) { return p.host === h; }).forEach(function (p) {
      var w = Math.max(x(p.end) - x(p.start), 3);
      var rect = el("rect", {"data-phase": p.phase, "data-host": h, x: x(p.start), y: top, width: w, height: 20,
                             fill: COLORS[p.phase] || "#999"});
      var tip = document.createElementNS(NS, "title");
      tip.textContent = p.phase + " on " + h + ": " + (p.end - p.start).toFixed(1) + " s"; rect.appendChild(tip);
    });
  });
  y += Math.max(hosts.length, 1) * 26 + 6;
  if (r.gate_verdict_at) {
    el("line", {id: "verdict-line", x1: x(r.gate_verdict_at), x2: x(r.gate_verdict_at), y1: 14, y2: y,
                stroke: "#111", "stroke-width": 2, "stroke-dasharray": "5 3"});
    el("text", {x: x(r.gate_verdict_at) + 4, y: 12}, "gate verdict");
  }
  for (var k = 0; k <= 6; k++) {
    var tt = t0 + (t1 - t0) * k / 6;
    el("text", {x: x(tt) - 10, y: y + 14}, Math.round(tt - t0) + " s");
  }
  svg.setAttribute("height", y + 24);
  document.body.setAttribute("data-rendered", "yes");
})();
</script></body></html>
"""
