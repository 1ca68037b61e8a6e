"""The web console (GET /) in a real headless browser: Debian's Chromium driven by selenium against a real
`facemask serve` process. The page must show what the server found after an upload: the enrolled identity's name,
the annotated picture drawn by the package's drawing code, and the gallery list; a screenshot is kept under
``test-artifacts/`` (or ``$FACEMASK_TEST_ARTIFACTS``)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from modelscope_facemask.testing.served_process import ServedFaceMask

selenium = pytest.importorskip("selenium", reason="selenium missing: pip install -e '.[test]'")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium or ChromeDriver is not installed: `apt-get install chromium chromium-driver` (.ci/run does it)")

ARTIFACTS = Path(os.environ.get("FACEMASK_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(small_model_dir, tmp_path_factory):
    with ServedFaceMask(small_model_dir, gallery=tmp_path_factory.mktemp("console") / "gallery") as server:
        yield server


def _enrol_through_page(browser, identity: str, photo: Path) -> None:
    browser.find_element(By.ID, "enrol-identity").send_keys(identity)
    browser.find_element(By.ID, "enrol-files").send_keys(str(photo))
    browser.find_element(By.ID, "enrol-button").click()
    enrolled = EC.text_to_be_present_in_element((By.ID, "enrol-message"), "enrolled " + identity)
    WebDriverWait(browser, 120).until(enrolled)


def test_console_identifies_an_uploaded_photo(browser, served, portraits):
    browser.get(served.url + "/")
    WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert "FaceMask console" in browser.title
    _enrol_through_page(browser, "alice", portraits["person_a_1"])
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "gallery-rows"), "alice"))

    browser.find_element(By.ID, "identify-file").send_keys(str(portraits["person_a_2"]))
    WebDriverWait(browser, 120).until(EC.text_to_be_present_in_element((By.ID, "identify-message"), "1 face"))
    faces = browser.find_element(By.ID, "faces").text
    served_answer = requests.post(served.url + "/v1/identify",
                                  files={"image": portraits["person_a_2"].read_bytes()}, timeout=120).json()
    expected = served_answer["faces"][0]["identity"]
    assert expected in faces and f"similarity {served_answer['faces'][0]['similarity']:.3f}" in faces
    image = browser.find_element(By.ID, "annotated")
    assert image.is_displayed()
    size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    assert size[0] > 100 and size[1] > 100  # the server's annotated JPEG was decoded by the browser
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve-console.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_console_shows_a_clear_error_for_a_file_that_is_not_an_image(browser, served, tmp_path):
    browser.get(served.url + "/")
    WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "status"), "ready"))
    bogus = tmp_path / "notes.jpg"
    bogus.write_bytes(b"this is not a picture")
    browser.find_element(By.ID, "identify-file").send_keys(str(bogus))
    message = browser.find_element(By.ID, "identify-message")
    WebDriverWait(browser, 60).until(lambda _: "HTTP 4" in message.text)
    assert "notes.jpg" in message.text and "error" in message.get_attribute("class")


def test_console_deletes_an_identity(browser, served, portraits):
    requests.post(served.url + "/v1/gallery/identities", data={"identity": "bob"},
                  files={"images": portraits["impostor_1"].read_bytes()}, timeout=120).raise_for_status()
    browser.get(served.url + "/")
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "gallery-rows"), "bob"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#gallery-rows tr")
    [row.find_element(By.TAG_NAME, "button") for row in rows if row.text.startswith("bob")][0].click()
    WebDriverWait(browser, 30).until(lambda _: "bob" not in browser.find_element(By.ID, "gallery-rows").text)
    listed = requests.get(served.url + "/v1/gallery", timeout=30).json()["identities"]
    assert "bob" not in [entry["identity"] for entry in listed]
