"""The web page at ``/``, in a real headless Chromium against a real `lensbox serve`.

The server is the `lensbox serve` command in its own process, over a bundle built from
examples/sample-catalog and installed in a bundle slot with a ``[state]`` section (so the
catalog takes changes), requiring an API key even on loopback. Chromium and chromedriver
come from Debian (``.ci/run`` installs them); Selenium drives them. Set
``LENSBOX_PAGE_SCREENSHOT=docs/page.png`` to refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .api_support import free_port, wait_ready
from .conftest import ROOT, SAMPLE_CATALOG, SAMPLE_QUERIES

KEY = "page-test-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1100,820",
)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen

    def get(self, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {KEY}", **kw.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from lensbox.device.live.slot import BundleSlot
    from lensbox.index_builder.build import BuildSettings, build_bundle

    root = tmp_path_factory.mktemp("page")
    built = root / "sample.lbx"
    build_bundle(SAMPLE_CATALOG, built, BuildSettings(cache_dir=None, workers=1), progress=False)
    slot = root / "state" / "bundles" / "default"
    BundleSlot(slot).install_copy(built)
    port = free_port()
    conf = root / "lensbox.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nrequire_auth = true\n'
        f'api_keys = ["{KEY}"]\nrate_limit = 0\n'
        f'[bundles]\ndefault = "{slot}"\n'
        f'[state]\ndir = "{root / "state"}"\nwatch_interval_seconds = 0\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LENSBOX", "NOTIFY"))}
    log = open(root / "serve.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lensbox.device.cli", "serve", "--config", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, root / "serve.log")
        yield Server(url, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# -- / is the page for a browser and the Alibaba RPC for everything else -------------------
def test_root_serves_the_page_to_a_browser(server: Server) -> None:
    resp = requests.get(server.url + "/", headers={"Accept": "text/html"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert '<input id="photo"' in resp.text and 'capture="environment"' in resp.text
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    plain = requests.get(server.url + "/", timeout=10)  # curl-style: no parameters at all
    assert plain.status_code == 200 and "<!doctype html>" in plain.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        got = requests.get(f"{server.url}/static/{asset}", timeout=10)
        assert got.status_code == 200 and kind in got.headers["Content-Type"], asset
    # nothing is loaded from anywhere but this box (usable offline, no CDN)
    for text in (resp.text, requests.get(server.url + "/static/app.js", timeout=10).text):
        assert "https://" not in text.replace("https?:", "")


def test_root_is_still_the_alibaba_rpc(server: Server) -> None:
    with_action = requests.get(
        server.url + "/",
        params={"Action": "SearchImageByPic", "AccessKeyId": KEY, "InstanceName": "default"},
        headers={"Accept": "text/html"},  # even from a browser: an Action means the RPC
        timeout=10,
    )
    body = with_action.json()
    assert body["Success"] is False and body["Code"] == "BadRequest"
    post = requests.post(server.url + "/", data={"AccessKeyId": KEY}, timeout=10)
    assert post.json()["Code"] == "BadRequest" and "Action is required" in post.json()["Msg"]
    # a client that forgot Action but sent other parameters gets Alibaba's error, not HTML
    forgot = requests.get(server.url + "/", params={"AccessKeyId": KEY, "Num": 3}, timeout=10)
    assert forgot.headers["Content-Type"].startswith("application/json")
    assert "Action is required" in forgot.json()["Msg"]
    missing = requests.get(server.url + "/static/nope.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"


# -- in a real browser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromedriver not installed (Debian: chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_with_key(driver, server: Server) -> None:
    """Open the page; the box requires a key, so the page asks for one; enter it."""
    driver.get(server.url + "/")
    driver.execute_script("localStorage.clear()")
    driver.get(server.url + "/")
    wait_for(driver, lambda d: not by_id(d, "key-panel").get_attribute("hidden"))
    assert "needs an API key" in by_id(driver, "key-message").text
    by_id(driver, "api-key").send_keys(KEY)
    by_id(driver, "key-form").submit()
    wait_for(driver, lambda d: by_id(d, "catalog-info").text == "18 items")
    wait_for(driver, lambda d: not by_id(d, "key-panel").is_displayed())  # accepted: closed


def search(driver, photo: Path) -> list[str]:
    by_id(driver, "photo").send_keys(str(photo))
    wait_for(driver, lambda d: by_id(d, "status").get_attribute("data-state"))
    assert by_id(driver, "status").get_attribute("data-state") == "done", by_id(
        driver, "status"
    ).text
    return [li.get_attribute("data-id") for li in css(driver, "#hits li.hit")]


def test_upload_a_photo_and_see_the_right_item_first(server: Server, browser, tmp_path):
    open_with_key(browser, server)
    ids = search(browser, SAMPLE_QUERIES / "coffee-photo.jpg")
    assert ids[0] == "coffee" and len(ids) == 10
    first = css(browser, "#hits li.hit")[0]
    score = float(first.find_element("css selector", ".score").text)
    assert 0.5 < score <= 1.0
    assert "selected" in first.get_attribute("class")
    # the thumbnail came from the bundle, through the API, with the key
    img = first.find_element("css selector", "img.thumb")
    wait_for(browser, lambda d: img.get_attribute("complete") == "true")
    assert 0 < int(img.get_attribute("naturalWidth")) <= 160
    # the query photo is shown on the canvas
    canvas = by_id(browser, "query-canvas")
    assert int(canvas.get_attribute("width")) > 100 and canvas.is_displayed()
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("LENSBOX_PAGE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, ROOT / target)

    ids = search(browser, SAMPLE_QUERIES / "rocket-photo.jpg")  # a second search replaces
    assert ids[0] == "rocket"


def test_region_and_verdict_are_drawn_when_a_hit_has_them(server: Server, browser) -> None:
    """Hits may carry ``verdict``, ``inliers`` and ``region`` (query-image pixels): the page
    draws the region over the photo and shows the verdict; without them it says so."""
    open_with_key(browser, server)
    search(browser, SAMPLE_QUERIES / "coffee-photo.jpg")
    state = browser.execute_script("return state.hits[0].region === undefined ? 'none' : 'x'")
    if state == "none":
        assert by_id(browser, "query-canvas").get_attribute("data-region") == "none"
        assert "no region" in by_id(browser, "query-caption").text
    size = browser.execute_script("return [state.query.width, state.query.height]")
    w, h = size
    box = {"x": w // 4, "y": h // 4, "width": w // 2, "height": h // 2}
    polygon = [
        [w // 4, h // 4],
        [3 * w // 4, h // 4],
        [3 * w // 4, 3 * h // 4],
        [w // 4, 3 * h // 4],
    ]
    for region in (box, polygon, {"points": polygon}):
        pixel = browser.execute_script(
            """
            const [region, px, py] = arguments;
            return (async () => {
              const hit = state.hits[0];
              hit.region = region; hit.verdict = 'match'; hit.inliers = 42;
              await renderHits(); drawQuery();
              const c = document.getElementById('query-canvas');
              const sx = c.width / state.query.width, sy = c.height / state.query.height;
              const x = Math.round(px * sx), y = Math.round(py * sy);
              return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
            })();
            """,
            region,
            w // 2,
            h // 4,  # on the top edge of the region
        )
        r, g, b, _a = pixel
        assert g > 150 and r < 80 and b > 80, pixel  # the green outline (#10b981)
        assert by_id(browser, "query-canvas").get_attribute("data-region") == "drawn"
        badge = css(browser, "#hits li.hit .badge")[0]
        assert badge.text == "match" and "verdict-match" in badge.get_attribute("class")
        assert "42 inliers" in css(browser, "#hits li.hit")[0].text
    inside = browser.execute_script(
        """const c = document.getElementById('query-canvas');
        return Array.from(c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data);"""
    )
    assert not (inside[1] > 150 and inside[0] < 80), "only the outline is drawn"


@pytest.mark.slow
def test_browse_add_and_delete_items(server: Server, browser) -> None:
    open_with_key(browser, server)
    css(browser, "nav.tabs button[data-tab=catalog]")[0].click()
    wait_for(browser, lambda d: len(css(d, "#items li.item")) == 18)
    assert by_id(browser, "browse-info").text == "1–18 of 18"
    by_id(browser, "browse-q").send_keys("card")
    by_id(browser, "browse-form").submit()
    wait_for(browser, lambda d: by_id(d, "browse-info").text == "1–6 of 6")
    assert sorted(li.get_attribute("data-id") for li in css(browser, "#items li.item")) == [
        f"card-0{i}" for i in range(6)
    ]
    # add an item from a photo (writes are enabled: [state] is configured)
    assert by_id(browser, "add-form").is_displayed()
    by_id(browser, "add-id").send_keys("mug-on-table")
    by_id(browser, "add-title").send_keys("Mug on a table")
    by_id(browser, "add-photo").send_keys(str(SAMPLE_QUERIES / "chelsea-cat-photo.jpg"))
    by_id(browser, "add-form").submit()
    wait_for(browser, lambda d: "Added mug-on-table" in by_id(d, "add-status").text)
    wait_for(browser, lambda d: by_id(d, "catalog-info").text == "19 items")
    listed = server.get("/v1/items", params={"q": "mug"}).json()
    assert [i["id"] for i in listed["items"]] == ["mug-on-table"]
    assert listed["items"][0]["metadata"]["title"] == "Mug on a table"
    # it is searchable at once
    browser.find_element("css selector", "nav.tabs button[data-tab=search]").click()
    assert "mug-on-table" in search(browser, SAMPLE_QUERIES / "chelsea-cat-photo.jpg")[:2]
    # and deletable from its card
    css(browser, "nav.tabs button[data-tab=catalog]")[0].click()
    by_id(browser, "browse-q").clear()
    by_id(browser, "browse-q").send_keys("mug")
    by_id(browser, "browse-form").submit()
    wait_for(browser, lambda d: len(css(d, "#items li.item[data-id='mug-on-table']")) == 1)
    card = css(browser, "#items li.item[data-id='mug-on-table']")[0]
    assert card.find_element("css selector", ".placeholder")  # added on the box: no picture
    card.find_element("css selector", "button.danger").click()
    alert = wait_for(browser, lambda d: d.switch_to.alert)
    assert "mug-on-table" in alert.text
    alert.accept()
    wait_for(browser, lambda d: by_id(d, "catalog-info").text == "18 items")
    assert server.get("/v1/items/mug-on-table").status_code == 404


def test_a_wrong_key_is_reported_on_the_page(server: Server, browser) -> None:
    browser.get(server.url + "/")
    browser.execute_script("localStorage.setItem('lensbox.apiKey', 'wrong-key')")
    browser.get(server.url + "/")
    wait_for(browser, lambda d: "refused" in by_id(d, "key-message").text)
    assert by_id(browser, "key-panel").is_displayed()
    browser.execute_script("localStorage.removeItem('lensbox.apiKey')")
