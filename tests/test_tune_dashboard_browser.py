"""`harness tune --dashboard`: optuna-dashboard serves the output folder's study on 127.0.0.1, seen in a real headless
Chromium driven by selenium through Debian's chromium-driver (as tests/test_rating_page_browser.py does).

A tiny `harness tune` (fake plugins) makes the study; the dashboard runs as a real process
(tests/fake_harness.py) and is stopped with SIGTERM. Skipped (saying why) when /usr/bin/chromium or
/usr/bin/chromedriver is missing (Debian: apt-get install -y chromium chromium-driver; .ci/run installs both).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import fakes
from test_rating_page_browser import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

pytest.importorskip("optuna_dashboard", reason="the 'tune' extra is not installed")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Chromium or chromium-driver is not installed (Debian: apt-get install -y chromium chromium-driver)"),
]

FAKE_HARNESS = Path(__file__).resolve().parent / "fake_harness.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_serves_the_study_on_localhost(tmp_path, cli) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the 'test' extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = fakes.registry_toml(dataset={"source": "fake-data", "n": 40, "test_size": 10, "train_size": 0, "seed": 42}, models=[fakes.DEFAULT_MODELS[0]])
    registry = tmp_path / "registry.toml"
    registry.write_text(text + "\n[tune]\nmetric = 'fake-len'\ntrials = 3\nchunk = 7\n[tune.space]\ntemperature = [0.1, 1.5]\n")
    missing = cli("tune", "--dashboard", "-r", registry)
    assert missing.exit_code == 2 and "no study yet" in missing.stderr
    assert cli("tune", "-r", registry).exit_code == 0

    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(FAKE_HARNESS), "tune", "--dashboard", "--port", str(port), "-r", str(registry)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        studies = None
        while time.monotonic() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.3)
        assert studies is not None, "the dashboard did not answer"
        (study,) = studies
        assert study["study_name"].startswith("fake-base-tune-")
        with socket.socket() as s:  # only on the loopback interface
            s.settimeout(1)
            host = socket.gethostbyname(socket.gethostname())
            if not host.startswith("127."):
                assert s.connect_ex((host, port)) != 0

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(60)
            driver.get(f"http://127.0.0.1:{port}/dashboard")
            WebDriverWait(driver, 60).until(lambda d: study["study_name"] in d.find_element(By.TAG_NAME, "body").text)
            driver.get(f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}")
            WebDriverWait(driver, 60).until(lambda d: "temperature" in d.find_element(By.TAG_NAME, "body").text)
            body = driver.find_element(By.TAG_NAME, "body").text
            assert study["study_name"] in body
        finally:
            driver.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 143, proc.stderr.read()
