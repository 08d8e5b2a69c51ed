"""Label Studio's own labeling page renders the harness's labeling config, and what an annotator clicks
there is what the harness reads back (the choice aliases, the stars, the comment, Skip = cancelled).

Drives the real Label Studio frontend in headless Chromium (Debian's chromium + chromium-driver, via
selenium); skipped, saying why, when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("label_studio", reason="Label Studio is tested in .venv-labelstudio: make test-labelstudio")

import rating_samples  # noqa: E402
from harness.api import PAIR_RIGHT, RatingScale
from harness_ratings.label_studio import read_export, write_export
from ls_server import ANNOTATOR_PASSWORD, download_plain, save_fixture

CHROMIUM = next((c for c in ("/usr/bin/chromium", shutil.which("chromium")) if c and os.path.exists(c)), None)
CHROMEDRIVER = next((c for c in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if c and os.path.exists(c)), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Chromium or chromium-driver is not installed (Debian: apt-get install -y chromium chromium-driver)"),
]

#: per scale: how to pick the rating on Label Studio's page, and the value the harness must read
CLICKS = {
    "binary": ("//label[.//input[@name='Acceptable']]", 1.0),
    "likert": ("(//ul[contains(@class, 'ant-rate')]/li)[4]//div[@role='radio']", 4.0),
    "pairwise": ("//label[.//input[@name='Right is better']]", PAIR_RIGHT),
}


@pytest.fixture(scope="module")
def annotator_browser(label_studio, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    account = label_studio.sign_up("ui.annotator@example.org")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(label_studio.url + "/user/login/")
        driver.find_element("name", "email").send_keys(account.email)
        driver.find_element("name", "password").send_keys(ANNOTATOR_PASSWORD + "\n")
        WebDriverWait(driver, 60).until(lambda d: "/user/login" not in d.current_url, message="the log-in")
        yield driver, account
    finally:
        driver.quit()


@pytest.mark.parametrize("scale_name", ["binary", "likert", "pairwise"])
def test_what_is_clicked_in_label_studio_is_read_back(label_studio, annotator_browser, tmp_path, scale_name):
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, account = annotator_browser
    scale = RatingScale(scale_name)
    items = rating_samples.items(scale, n=2)
    write_export(tmp_path / "export", items, scale)
    admin = label_studio.client()
    project = admin.projects.create(title=f"harness {scale_name} in the browser", label_config=(tmp_path / "export" / "labeling_config.xml").read_text())
    admin.projects.import_tasks(id=project.id, request=json.loads((tmp_path / "export" / "tasks.json").read_text()))

    def wait(what, predicate, timeout=90):
        return WebDriverWait(driver, timeout).until(predicate, message=f"waiting for {what}")

    def click(xpath, what):
        """Click as a person would: once no toast covers the button any more."""

        def clicked(d):
            try:
                d.find_element(By.XPATH, xpath).click()
                return True
            except ElementClickInterceptedException:
                return False

        wait(what, clicked, timeout=30)

    def submitted():
        return sum(t.total_annotations + t.cancelled_annotations for t in admin.tasks.list(project=project.id))

    driver.get(f"{label_studio.url}/projects/{project.id}/data?labeling=1")
    wait("the labeling page", lambda d: d.find_elements(By.CSS_SELECTOR, "textarea[name=comment]"))
    # the texts of the first task as the harness exported them
    shown = driver.execute_script("return [...document.querySelectorAll('.lsf-richtext__line')].map(e => e.textContent)")
    assert items[0].instruction in shown and items[0].reference in shown and all(o in shown for o in items[0].outputs)

    xpath, value = CLICKS[scale_name]
    wait("the rating control", lambda d: d.find_elements(By.XPATH, xpath))
    click(xpath, "the rating control")
    # typed, not "Add"-ed: Label Studio saves the box's text with the annotation all the same
    driver.find_element(By.CSS_SELECTOR, "textarea[name=comment]").send_keys("clicked in Label Studio")
    click("//button[normalize-space()='Submit']", "the Submit button")
    wait("the annotation to be saved", lambda d: submitted() == 1)
    # the second task: Skip (a cancelled annotation)
    wait("the second task", lambda d: items[1].instruction in d.execute_script("return document.body.innerText"))
    click("//button[normalize-space()='Skip']", "the Skip button")
    wait("the skip to be saved", lambda d: submitted() == 2)

    path = download_plain(label_studio, project.id, tmp_path / "export.json")
    raw = json.loads(path.read_text())
    states = sorted((t["data"]["item_id"], a["was_cancelled"]) for t in raw for a in t["annotations"])
    assert states == [(items[0].item_id, False), (items[1].item_id, True)]
    ratings, got_scale = read_export(path, rating_samples.by_id(items))
    assert got_scale == scale
    assert [(r.item_id, r.annotator, r.value, r.comment) for r in ratings] == [
        (items[0].item_id, f"label-studio user {account.user_id}", value, "clicked in Label Studio")
    ]
    save_fixture(path, f"{scale_name}-clicked.json")
