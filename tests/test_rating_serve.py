"""Issue 11 end to end: pairwise items, `harness human serve` over the store, and what the reports make of the ratings."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import fakes
from sheets import read_rows, write_rows
from harness.api import PAIR_LEFT, PAIR_RIGHT, PAIR_TIE
from harness.store import STORE_NAME

FAKE_HARNESS = Path(__file__).resolve().parent / "fake_harness.py"


def _items(registry: Path) -> dict[str, dict]:
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    con.row_factory = sqlite3.Row
    try:
        return {r["item_id"]: dict(r) for r in con.execute("SELECT * FROM human_items")}
    finally:
        con.close()


# --------------------------------------------------------------------------- pairwise through a sheet


def test_pairwise_sheet_round_trip_gives_win_rates_a_ranking_and_a_pairwise_analysis(cli, fake_plugins, fake_registry) -> None:
    import harness_reporters.html

    from harness.plugins import build_plugins

    fake_plugins.by_kind["reporter"].update(build_plugins(entry_points=False, extra=[harness_reporters.html]).by_kind["reporter"])
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "pairs.csv"
    result = cli("human", "export", "--pairwise", "-o", sheet, "-n", 4, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    rows = read_rows(sheet)
    assert list(rows[0])[4:6] == ["response_left", "response_right"]
    items = _items(fake_registry)
    assert {i["config_b"] for i in items.values()} == {"top_k_10_num_beams_1_temp_0.8"}  # the baseline: the first config here
    assert {bool(i["a_on_left"]) for i in items.values()} == {True, False}  # sides are drawn
    # annotators prefer beam search over the baseline, and the baseline over anything else
    filled = []
    for annotator in ("ann1", "ann2"):
        for r in rows:
            item = items[r["item_id"]]
            a_wins = "num_beams_1" not in item["config"]
            verdict = "left" if a_wins == bool(item["a_on_left"]) else "right"
            filled.append(r | {"rating": verdict, "annotator": annotator})
    write_rows(sheet, filled)
    imported = cli("human", "import", sheet, "-r", fake_registry)
    assert imported.exit_code == 0 and "pairwise rating(s)" in imported.stdout, imported.output

    md = cli("report", "--format", "markdown", "-r", fake_registry)
    assert md.exit_code == 0 and "## Pairwise preferences (human)" in md.stdout
    lines = [line for line in md.stdout.splitlines() if line.startswith("| fake-") and " / " in line]
    beams = [line for line in lines if "num_beams_2" in line.split("|")[2]]
    others = [line for line in lines if "num_beams_1_temp_0.0" in line.split("|")[2]]
    assert beams and all("| 1.000 [" in line for line in beams)
    assert others and all("| 0.000 [" in line for line in others)
    assert "Bradley-Terry ranking of fake-base" in md.stdout
    table = cli("report", "-r", fake_registry)
    assert "Pairwise preferences (human)" in table.stdout and "beams=2" in table.stdout and "Bradley-Terry ranking of fake-tuned" in table.stdout
    html = cli("report", "--format", "html", "-r", fake_registry)
    section = html.stdout.split('<section id="pairwise">')[1].split("</section>")[0]
    assert "Win rate" in section and "Bradley-Terry ranking of fake-base" in section and "1.000 [" in section

    analysis = cli("analyze", "--format", "json", "--level", "pairwise", "-r", fake_registry)
    assert analysis.exit_code == 0, analysis.output
    found = json.loads(analysis.stdout)
    assert found and {r["level"] for r in found} == {"pairwise", "preference"}  # preference: each metric's agreement with the annotators'
    assert {r["metric"] for r in found if r["level"] == "preference"} == {"fake-len", "fake-overlap"}


def test_a_single_sheet_rated_with_pair_verdicts_is_refused(cli, fake_registry) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "single.csv"
    assert cli("human", "export", "-o", sheet, "-n", 2, "-r", fake_registry).exit_code == 0
    write_rows(sheet, [r | {"rating": "left", "annotator": "a"} for r in read_rows(sheet)])
    result = cli("human", "import", sheet, "-r", fake_registry)
    assert result.exit_code == 2 and "is not a number" in result.stderr


def test_the_exported_scale_decides_a_sheet_of_only_ones(cli, tmp_path) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml", human={"scale": "likert", "n_per_cell": 2})
    assert cli("run", "--all", "-r", registry).exit_code == 0
    sheet = tmp_path / "s.csv"
    assert cli("human", "export", "-o", sheet, "-r", registry).exit_code == 0
    write_rows(sheet, [r | {"rating": "1", "annotator": "a"} for r in read_rows(sheet)])
    result = cli("human", "import", sheet, "-r", registry)
    assert result.exit_code == 0 and "likert" in result.stdout, result.output


# --------------------------------------------------------------------------- the page over the store


def _api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"} if body is not None else {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def serve_page():
    """Start `harness human serve` (fakes) in a process; every one started is killed at the end, whatever happened."""
    started: list[subprocess.Popen] = []

    def start(registry: Path, *args: str) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, str(FAKE_HARNESS), "human", "serve", "--port", "0", *args, "-r", str(registry)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        started.append(proc)
        for line in proc.stdout:
            if "http://127.0.0.1:" in line:
                return proc, line[line.index("http://"):].split()[0]
        raise AssertionError(proc.stderr.read())

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_serve_stores_every_rating_at_once_resumes_and_refuses_a_second_rating(tmp_path, serve_page) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml", human={"scale": "likert", "n_per_cell": 2})
    assert subprocess.run([sys.executable, str(FAKE_HARNESS), "run", "--all", "-r", str(registry)], capture_output=True).returncode == 0
    proc, url = serve_page(registry, "--annotator", "Ann")
    status, session = _api(url, "/api/session?annotator=Ann")
    assert status == 200 and session["done"] == 0 and session["total"] > 0
    first, second = session["items"][0]["id"], session["items"][1]["id"]
    assert _api(url, "/api/ratings", {"annotator": "Ann", "item_id": first, "value": 4, "comment": "fine"})[0] == 201
    # in the store at once (the server is still running)
    con = sqlite3.connect(tmp_path / "out" / STORE_NAME)
    assert con.execute("SELECT item_id, annotator, rating, scale, comment FROM human_ratings").fetchall() == [(first, "Ann", 4.0, "likert", "fine")]
    con.close()
    status, body = _api(url, "/api/ratings", {"annotator": "Ann", "item_id": first, "value": 2})
    assert status == 409 and body["given"]["value"] == 4
    assert _api(url, "/api/ratings", {"annotator": "Ann", "item_id": "hnotanitem", "value": 2})[0] == 404
    assert _api(url, "/api/ratings", {"annotator": "Ann", "item_id": second, "value": 9})[0] == 400
    proc.send_signal(signal.SIGKILL)  # killing the server loses nothing
    proc.wait(10)

    proc, url = serve_page(registry, "--annotator", "Ann")
    status, session = _api(url, "/api/session?annotator=Ann")
    assert session["done"] == 1 and first in session["given"]
    assert _api(url, "/api/ratings", {"annotator": "Ann", "item_id": second, "value": 5})[0] == 201
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "1 rating(s) saved by this page" in out

    report = subprocess.run([sys.executable, str(FAKE_HARNESS), "report", "--format", "json", "-r", str(registry)], capture_output=True, text=True)
    human = [r for r in json.loads(report.stdout) if r["metric"] == "human" and r["value"] is not None]
    # Likert 4 and 5 on 0-1 are 0.75 and 1.0, whichever cells they fall in
    assert sum(r["n"] for r in human) == 2 and sum(r["n"] * r["value"] for r in human) == pytest.approx(1.75)


@pytest.mark.slow
def test_serve_stopped_by_sigterm_exits_143_like_every_command(tmp_path, serve_page) -> None:
    """Issue 17, item 4: `human serve` exited 0 on SIGTERM, where every other command exits 143."""
    registry = fakes.write_registry(tmp_path / "registry.toml", human={"n_per_cell": 1})
    assert subprocess.run([sys.executable, str(FAKE_HARNESS), "run", "--all", "-r", str(registry)], capture_output=True).returncode == 0
    proc, url = serve_page(registry, "--annotator", "Ann")
    status, session = _api(url, "/api/session?annotator=Ann")
    assert _api(url, "/api/ratings", {"annotator": "Ann", "item_id": session["items"][0]["id"], "value": 1})[0] == 201
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert "1 rating(s) saved by this page" in out and "stopped (SIGTERM)" in err and "Traceback" not in err


# --------------------------------------------------------------------------- in a browser, over the store


@pytest.mark.slow
def test_clicks_in_both_modes_land_in_the_store_and_the_reports(cli, fake_registry, tmp_path) -> None:
    pytest.importorskip("selenium")
    from test_rating_page_browser import CHROMEDRIVER, CHROMIUM, click, log_in, press, saved

    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium or chromium-driver is not installed")
    from selenium import webdriver

    from harness.report.items import prepare_items
    from harness.report.rating_page import serve
    from harness.report.rating_store import StoreBackend
    from harness.report.results import Results
    from harness.store import Store

    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    store = Store.open_existing(fake_registry.parent / "out", threads=True)
    try:
        for pairwise, keys in ((False, ["1", "0", "1"]), (True, ["l", "r", "t"])):  # the second of each is a click
            results = Results.load(store, metrics=[])
            items, scale = prepare_items(store, results, n_per_cell=1, pairwise=pairwise, scale="binary")
            server = serve(StoreBackend(store, items, scale), announce=None).start()
            try:
                log_in(driver, server, "Ann")
                for n, key in enumerate(keys):
                    if n == 1:
                        click(driver, f"rate-{key}")
                    else:
                        press(driver, key)
                    saved(driver, n)
                driver.refresh()  # a reload resumes after the last rated item
                from test_rating_page_browser import page_state, text, wait

                wait(driver, lambda d: page_state(d) == "rating", "the page after the reload")
                assert text(driver, "progress").startswith("3 / ")
            finally:
                server.stop()
    finally:
        driver.quit()
        store.close()
    con = sqlite3.connect(fake_registry.parent / "out" / STORE_NAME)
    got = con.execute("SELECT scale, COUNT(*) FROM human_ratings GROUP BY scale ORDER BY scale").fetchall()
    shown = sorted(v for (v,) in con.execute("SELECT rating FROM human_ratings WHERE scale='pairwise'"))
    con.close()
    assert got == [("binary", 3), ("pairwise", 3)]
    assert shown == sorted([PAIR_LEFT, PAIR_RIGHT, PAIR_TIE])
    md = cli("report", "--format", "markdown", "-r", fake_registry)
    assert "## Pairwise preferences (human)" in md.stdout
    human = [r for r in json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout) if r["metric"] == "human" and r["value"] is not None]
    assert sum(r["n"] for r in human) >= 3
