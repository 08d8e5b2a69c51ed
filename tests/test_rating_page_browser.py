"""The rating page in a real headless Chromium, driven by selenium through Debian's chromium-driver.

Clicks and keystrokes rate items (absolute and pairwise), skip and back move, a reload resumes,
two annotators rate at once, a second rating of one item is refused and the page shows the first;
afterwards the backend holds exactly what was clicked. Skipped (saying why) when /usr/bin/chromium
or /usr/bin/chromedriver is missing (Debian: apt-get install -y chromium chromium-driver; .ci/run
installs both). With HARNESS_RATING_SCREENSHOT=PATH the page is also saved mid-rating as a PNG
(how docs/rating-page.png was made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import rating_samples
from harness.api import PAIR_LEFT, PAIR_RIGHT, PAIR_TIE, RatingItem, RatingScale
from harness.report.rating_page import MemoryBackend, serve

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1100,900",
]


def _find(*candidates: str | None) -> str | None:
    return next((c for c in candidates if c and os.path.exists(c)), None)


CHROMIUM = _find("/usr/bin/chromium", shutil.which("chromium"))
CHROMEDRIVER = _find("/usr/bin/chromedriver", shutil.which("chromedriver"))

pytestmark = [
    pytest.mark.slow,  # each test takes seconds, the module ~20 s with browser starts
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Chromium or chromium-driver is not installed (Debian: apt-get install -y chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def new_browser(tmp_path_factory):
    """Start a fresh headless Chromium (own profile) per call; all are closed at the end of the module."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the 'test' extra)")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    drivers = []

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def browser(new_browser):
    driver = new_browser()
    yield driver
    assert_clean_console(driver)


def assert_clean_console(driver):
    """No script error and no blocked (external) load; API answers the test provoked (4xx) are expected."""
    severe = [
        e for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not (e["source"] == "network" and "/api/" in e["message"] and "status of 4" in e["message"])
    ]
    assert severe == [], severe


def start_server(scale, *, annotator=None, items=None):
    backend = MemoryBackend(items or rating_samples.items(scale), RatingScale(scale))
    return serve(backend, annotator=annotator, announce=None).start()


@pytest.fixture
def servers():
    started = []

    def make(scale, **kwargs):
        server = start_server(scale, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- page helpers


def wait(driver, predicate, what="the page", timeout=10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d), message=f"waiting for {what}")


def page_state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def current(driver) -> str:
    return driver.execute_script("return document.body.dataset.itemId")


def text(driver, element_id) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def log_in(driver, server, name):
    driver.get(server.url)
    wait(driver, lambda d: page_state(d) == "login", "the name form")
    field = driver.find_element("id", "annotator-name")
    field.send_keys(name)
    field.send_keys("\n")
    wait(driver, lambda d: page_state(d) in ("rating", "done"), "the first item")


def press(driver, keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def click(driver, element_id):
    driver.find_element("id", element_id).click()


def saved(driver, before: int):
    """Wait until the progress counter moved past ``before``."""
    wait(driver, lambda d: text(d, "progress").startswith(f"{before + 1} / "), f"rating {before + 1} to be saved")


def rated(backend, annotator=None):
    return [(r.item_id, r.annotator, r.value, r.comment) for r in backend.ratings() if annotator is None or r.annotator == annotator]


# --------------------------------------------------------------------------- tests


def test_likert_by_clicks_and_keys_with_skip_back_and_reload(browser, servers):
    server = servers("likert")
    by_id = rating_samples.by_id(rating_samples.items("likert"))
    log_in(browser, server, "Ann")
    order = [i.item_id for i in server.backend.items("Ann")]
    assert current(browser) == order[0] and text(browser, "progress") == "0 / 6" and text(browser, "position") == "Item 1 of 6"
    # the texts are shown as text: markup is not run, $variables are not filled in
    item = by_id[order[0]]
    assert [text(browser, i) for i in ("instruction", "reference", "output")] == [item.instruction, item.reference or "(no reference)", item.outputs[0]]
    assert text(browser, "input") == (item.input or "(no input)")
    assert browser.find_element("id", "single").is_displayed() and not browser.find_element("id", "pair").is_displayed()

    expected = []
    click(browser, "rate-4")  # a click
    saved(browser, 0)
    expected.append((order[0], "Ann", 4.0, ""))
    assert current(browser) == order[1]

    # typing in the comment box rates nothing, even digits and shortcut letters
    browser.find_element("id", "comment").send_keys("2 short, but b-s correct")
    assert rated(server.backend) == expected
    browser.find_element("tag name", "body").click()  # focus leaves the box
    press(browser, "2")  # a keystroke
    saved(browser, 1)
    expected.append((order[1], "Ann", 2.0, "2 short, but b-s correct"))

    press(browser, "s")  # skip order[2]
    wait(browser, lambda d: current(d) == order[3], "the item after the skipped one")
    press(browser, "5")
    saved(browser, 2)
    expected.append((order[3], "Ann", 5.0, ""))
    assert current(browser) == order[4]

    click(browser, "back")
    wait(browser, lambda d: current(d) == order[3], "the item before")
    assert text(browser, "given") == "You rated this: 5 (Very good)"
    assert not browser.find_element("id", "rate-3").is_enabled()
    press(browser, "3")  # an item is rated once: the keys do nothing here
    press(browser, "b")
    press(browser, "b")
    wait(browser, lambda d: current(d) == order[1], "two items back")
    assert text(browser, "given") == "You rated this: 2 (Poor) \u2013 \u201c2 short, but b-s correct\u201d"
    assert browser.find_element("id", "comment").get_attribute("value") == "2 short, but b-s correct"
    assert rated(server.backend) == expected

    # a reload resumes after the last item rated, with the annotator kept in the address
    assert browser.current_url.endswith("?annotator=Ann")
    browser.refresh()
    wait(browser, lambda d: page_state(d) == "rating", "the page after the reload")
    assert current(browser) == order[4] and text(browser, "progress") == "3 / 6"
    press(browser, "1")
    saved(browser, 3)
    click(browser, "rate-3")
    saved(browser, 4)
    expected += [(order[4], "Ann", 1.0, ""), (order[5], "Ann", 3.0, "")]
    # the skipped item comes back at the end
    wait(browser, lambda d: current(d) == order[2], "the skipped item")
    press(browser, "4")
    wait(browser, lambda d: page_state(d) == "done", "the end")
    expected.append((order[2], "Ann", 4.0, ""))
    assert text(browser, "done-text") == "All 6 items rated \u2013 thank you!" and text(browser, "progress") == "6 / 6"
    press(browser, "b")
    wait(browser, lambda d: page_state(d) == "rating" and current(d) == order[5], "the last item")

    assert rated(server.backend) == expected


def test_pairwise_by_clicks_and_keys(browser, servers):
    server = servers("pairwise")
    by_id = rating_samples.by_id(rating_samples.items("pairwise"))
    log_in(browser, server, "Ann")
    order = [i.item_id for i in server.backend.items("Ann")]
    left, right = browser.find_element("id", "output-left"), browser.find_element("id", "output-right")
    assert left.is_displayed() and right.is_displayed() and not browser.find_element("id", "single").is_displayed()
    assert left.location["x"] < right.location["x"] and left.location["y"] == right.location["y"]  # side by side
    assert (text(browser, "output-left"), text(browser, "output-right")) == by_id[order[0]].outputs
    labels = browser.execute_script("return [...document.querySelectorAll('button.rate')].map(b => [b.firstChild.textContent, b.querySelector('kbd').textContent])")
    assert labels == [["Left is better", "L"], ["Tie", "T"], ["Right is better", "R"]]

    click(browser, "rate-r")
    saved(browser, 0)
    press(browser, "l")
    saved(browser, 1)
    press(browser, "T")  # shift does not matter
    saved(browser, 2)
    click(browser, "rate-t")
    saved(browser, 3)
    assert rated(server.backend) == [
        (order[0], "Ann", PAIR_RIGHT, ""),
        (order[1], "Ann", PAIR_LEFT, ""),
        (order[2], "Ann", PAIR_TIE, ""),
        (order[3], "Ann", PAIR_TIE, ""),
    ]


def test_binary_keys(browser, servers):
    server = servers("binary", annotator="Bea")
    browser.get(server.url)  # a fixed annotator: no name to type
    wait(browser, lambda d: page_state(d) == "rating", "the first item")
    assert text(browser, "who") == "Annotator: Bea" and not browser.find_element("id", "switch").is_displayed()
    order = [i.item_id for i in server.backend.items("Bea")]
    press(browser, "0")
    saved(browser, 0)
    press(browser, "1")
    saved(browser, 1)
    press(browser, "3")  # not a key of this scale
    press(browser, "0")
    saved(browser, 2)
    assert rated(server.backend) == [(order[0], "Bea", 0.0, ""), (order[1], "Bea", 1.0, ""), (order[2], "Bea", 0.0, "")]


def test_two_annotators_at_once_and_a_refused_second_rating(new_browser, servers):
    server = servers("likert")
    ann, bob = new_browser(), new_browser()
    log_in(ann, server, "Ann")
    log_in(bob, server, "Bob")
    ann_order = [i.item_id for i in server.backend.items("Ann")]
    bob_order = [i.item_id for i in server.backend.items("Bob")]
    assert ann_order != bob_order  # each has an order of their own
    for step, (a, b) in enumerate([("5", "1"), ("4", "2"), ("3", "3")]):
        press(ann, a)
        press(bob, b)
        saved(ann, step)
        saved(bob, step)
    assert sorted(rated(server.backend, "Ann")) == sorted((ann_order[i], "Ann", float(v), "") for i, v in enumerate("543"))
    assert sorted(rated(server.backend, "Bob")) == sorted((bob_order[i], "Bob", float(v), "") for i, v in enumerate("123"))

    # Ann opens a second window; it resumes at the same item. She rates it there ...
    ann2 = new_browser()
    ann2.get(server.url + "?annotator=Ann")
    wait(ann2, lambda d: page_state(d) == "rating" and current(d) == ann_order[3], "Ann's second window")
    press(ann2, "2")
    saved(ann2, 3)
    # ... then again in the first window, which still shows the item unrated: refused, and shown
    assert current(ann) == ann_order[3]
    click(ann, "rate-5")
    wait(ann, lambda d: "already rated" in text(d, "status"), "the refusal")
    assert text(ann, "status").startswith("Not saved: 'Ann' already rated item")
    assert text(ann, "given") == "You rated this: 2 (Poor)"
    assert [r for r in rated(server.backend, "Ann") if r[0] == ann_order[3]] == [(ann_order[3], "Ann", 2.0, "")]
    assert len(server.backend.ratings()) == 7
    for driver in (ann, bob, ann2):
        assert_clean_console(driver)


def test_switching_annotator_on_the_page(browser, servers):
    server = servers("binary")
    log_in(browser, server, "Ann")
    press(browser, "1")
    saved(browser, 0)
    click(browser, "switch")
    wait(browser, lambda d: page_state(d) == "login", "the name form")
    field = browser.find_element("id", "annotator-name")
    field.send_keys("   ")
    field.send_keys("\n")
    wait(browser, lambda d: "missing" in text(d, "login-status"), "the refusal of a blank name")
    field.clear()
    field.send_keys("Cy\n")
    wait(browser, lambda d: page_state(d) == "rating" and text(d, "progress") == "0 / 6", "Cy's first item")
    press(browser, "0")
    saved(browser, 0)
    assert [(r.annotator, r.value) for r in server.backend.ratings()] == [("Ann", 1.0), ("Cy", 0.0)]


def test_screenshot_for_the_readme(browser, servers):
    """A likert page mid-rating, as the README shows it (saved only with HARNESS_RATING_SCREENSHOT=PATH)."""
    items = [
        RatingItem("hd3f9a01c2e", "Give three tips for staying healthy.", "", "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep seven to nine hours.",
                   ("1. Eat plenty of fruit and vegetables.\n2. Move for at least 30 minutes a day.\n3. Keep a regular sleep schedule.",)),
        RatingItem("h81b0c4e7aa", "Translate the sentence into French.", "The library opens at nine.", "La bibliothèque ouvre à neuf heures.",
                   ("La bibliothèque ouvre à neuf heures.",)),
        RatingItem("h5e2d7f3b10", "Summarise the text in one sentence.", "The committee met on Tuesday and agreed to move the budget vote to next month, after members asked for more time to review the figures.",
                   "The budget vote was postponed to next month so members could review the figures.", ("The committee met on Tuesday.",)),
        RatingItem("hc07a9e5d42", "Name the largest planet in the solar system.", "", "Jupiter.", ("Jupiter is the largest planet in the solar system.",)),
    ]
    server = servers("likert", items=items)
    log_in(browser, server, "Ann")
    press(browser, "5")
    saved(browser, 0)
    press(browser, "2")
    saved(browser, 1)
    browser.find_element("id", "comment").send_keys("Misses the decision: the vote was moved.")
    browser.set_window_size(1000, 760)
    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    target = os.environ.get("HARNESS_RATING_SCREENSHOT")
    if target:
        Path(target).write_bytes(png)
