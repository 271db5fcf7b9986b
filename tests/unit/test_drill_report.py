"""The drill's report: its numbers from the ledger, events and timeline, its verdict, and its HTML page as
headless Chromium renders it (with no network): the phases drawn per host and the counts on the page."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils import drill
from tests.support import chromium

T0 = 1_796_000_000.0
GOOD, BAD = "1.0.0", "1.2.0"
HOSTS = ["w1", "w2", "w3"]
PHASE_TIMES = {  # seconds after T0: the bad deploy, its gate's verdict at 30, the rollback
    "pause": (2, 4), "drain": (4, 6), "switch": (6, 9), "restart": (9, 13), "gate": (13, 30),
    "rollback": (30, 34), "replay": (34, 35), "resume": (35, 36), "verify": (36, 37),
}  # fmt: skip


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timeline() -> dict:
    tasks = [
        {"host": host, "task": f"{phase} step", "phase": phase, "start": _iso(a), "end": _iso(b), "outcome": "ok"}
        for host in HOSTS
        for phase, (a, b) in PHASE_TIMES.items()
    ]
    tasks.append({"host": "w1", "task": "Wait until its workers consume, release 1.0.0", "phase": "rollback",
                  "start": _iso(31), "end": _iso(33.5), "outcome": "ok"})  # fmt: skip
    tasks.append({"host": "w1", "task": "skipped", "phase": "pause", "start": _iso(50), "end": _iso(51),
                  "outcome": "skipped"})  # fmt: skip
    return {"tasks": tasks}


def _starts() -> list[dict]:
    starts = [{"token": f"b{i}", "release": BAD, "worker": f"shop:{BAD}:w{i % 6}", "t": T0 + 14 + i * 0.5}
              for i in range(30)]  # fmt: skip
    starts += [{"token": f"g{i}", "release": GOOD, "worker": f"shop:{GOOD}:w{i}", "t": T0 + 33 + i * 0.1}
               for i in range(6)]  # fmt: skip
    return starts


def _report(**overrides) -> dict:
    params = {
        "backend": "rq", "queues": ["orders"], "pool": "shop", "good_release": GOOD, "bad_release": BAD,
        "started": T0, "rolled_back": True, "workers_expected": 6, "deploy_message": "rolled back pool shop",
        "awx": {"job_id": 42, "user": "alice", "template": "drill"},
    }  # fmt: skip
    params.update(overrides.pop("params", {}))
    samples = [
        {"t": T0 + s, "depth": {"orders": 3 + (s % 7)}, "started": 20 * s, "finished": 19 * s, "failed": s // 2}
        for s in range(0, 60)
    ]
    counts = {"enqueued": 1200, "finished": 1200, "failed": 61, "replayed": 61, "lost": 0, "duplicated": 0}
    fields = {
        "params": params,
        "samples": samples,
        "events": [{"time": str(T0 + 30), "module": "rollout_check", "action": "unhealthy", "release": BAD}],
        "counts": counts,
        "starts": _starts(),
        "timeline": _timeline(),
        "fleet": [{"host": h, "current": GOOD, "paused": False} for h in HOSTS],
        "finished_at": T0 + 60,
    }
    fields.update(overrides)
    return drill.build_report(**fields)


def test_times_come_from_the_ledger_and_the_gates_verdict():
    report = _report()
    assert report["gate_verdict_at"] == T0 + 30
    assert report["times"]["detect_s"] == 16.0  # the bad release's first task at 14 s
    assert report["times"]["recover_s"] == 3.5  # the sixth worker of 1.0.0 took its first task at 33.5 s
    assert report["passed"], report["problems"]
    assert report["verdict"].startswith("PASSED: 1.2.0 was caught by the health gate 16 s after its first task")


def test_without_a_ledger_the_recovery_comes_from_the_timeline_and_counts_are_unknown():
    report = _report(counts=None, starts=[])
    assert report["times"] == {"recover_s": 3.5}
    assert report["passed"]
    assert "task counts unknown" in report["verdict"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"counts": {"enqueued": 10, "finished": 9, "failed": 0, "replayed": 0, "lost": 1, "duplicated": 0}},
         "1 task(s) lost"),
        ({"fleet": [{"host": "w1", "current": BAD}, {"host": "w2", "current": GOOD}]}, "1 of 2 host(s) not on 1.0.0"),
        ({"fleet": [{"current": GOOD}, {}]}, "1 of 2 host(s) not on 1.0.0"),
        ({"params": {"rolled_back": False}}, "the deploy of 1.2.0 did not roll back by itself"),
        ({"fleet": [{"host": "w1", "current": GOOD, "paused": True}]}, "queues left paused (seen from w1)"),
    ],
)  # fmt: skip
def test_the_drill_fails_when_the_fleet_is_not_back_or_a_task_was_lost(overrides, problem):
    report = _report(**overrides)
    assert not report["passed"]
    assert problem in report["problems"]
    assert report["verdict"].startswith("FAILED: ")


def test_phase_bands_per_host_merge_touching_tasks_and_skip_skipped_ones():
    bands = drill.phase_bands(_timeline(), T0)
    assert {(b["host"], b["phase"]) for b in bands} == {(h, p) for h in HOSTS for p in PHASE_TIMES}
    rollback = next(b for b in bands if (b["host"], b["phase"]) == ("w1", "rollback"))
    assert (rollback["start"], rollback["end"]) == (T0 + 30, T0 + 34)


def test_the_text_report_says_what_happened():
    text = drill.text_report(_report())
    assert "time to detect:  16 s" in text and "time to recover: 3.5 s" in text
    assert "1200 enqueued, 1200 finished, 61 failed by the bad release, 61 replayed, 0 lost, 0 duplicated" in text
    assert text.splitlines()[-1].startswith("PASSED")


def test_the_html_page_renders_the_phases_and_counts_in_chromium(tmp_path):
    assert chromium.chromium(), "Debian's chromium is missing: hack/bootstrap.sh installs it"
    paths = drill.write_report(_report(), str(tmp_path))
    assert json.loads((tmp_path / "report.json").read_text())["passed"]
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no network

    dom = chromium.dump_dom(tmp_path / "report.html")
    assert 'data-rendered="yes"' in dom, "the page's script did not run"
    cells = dict(re.findall(r'<td class="n" id="count-(\w+)">([^<]*)</td>', dom))
    assert cells == {"detect": "16 s", "recover": "3.5 s", "enqueued": "1200", "finished": "1200", "failed": "61",
                     "replayed": "61", "lost": "0", "duplicated": "0"}  # fmt: skip
    drawn = re.findall(r'<rect data-phase="(\w+)" data-host="(\w+)"', dom)
    assert set(drawn) == {(p, h) for p in PHASE_TIMES for h in HOSTS}
    assert 'id="verdict-line"' in dom and "PASSED: 1.2.0 was caught" in dom
    assert "AWX job 42 by alice" in dom

    shot = chromium.screenshot(tmp_path / "report.html", tmp_path / "report.png")
    colours = chromium.colour_counts(shot)
    palette = dict(re.findall(r'(\w+|"switch"): "(#[0-9a-f]{6})"', page.split("var COLORS = {", 1)[1].split("};")[0]))
    palette = {name.strip('"'): colour for name, colour in palette.items()}
    assert set(palette) == set(PHASE_TIMES)
    for phase, colour in palette.items():
        assert colours[chromium.hex_rgb(colour)] > 100, f"the {phase} band is not on the screen"
    assert colours[chromium.hex_rgb("#16a34a")] > 100, "no finished tasks drawn"
    assert colours[chromium.hex_rgb("#1d4ed8")] > 20, "no queue depth drawn"
    assert paths["html"].endswith("report.html")
