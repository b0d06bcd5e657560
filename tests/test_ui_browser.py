"""The Dagster UI in a real browser: `salmon ui` on a copy of the session's tiny project, driven by
headless Chromium through Selenium (Debian's /usr/bin/chromium and /usr/bin/chromedriver; Selenium
Manager never runs, nothing is downloaded).

One test, in the order a user would go: launch a materialization of `prompt_pool` from its asset
page (it runs while the rest is checked), see every asset key in the catalog and the lineage graph,
read `benchmark_scores`' row count, lineage metadata and plots (base64 PNGs in Markdown metadata
that must really render), then watch the run succeed in the UI and confirm it through the instance
and `salmon status`. Screenshots go to the test's tmp_path (and to $SALMON_SCREENSHOTS if set).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from projects import ROOT, copy_project, free_port, states, stop_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000"]
SERVER_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180
WAIT_S = 60  # one page element
PLOT_ASSET = "benchmark_scores"
RUN_ASSET = "prompt_pool"  # a multi-asset with prompt_pool_rejects, cheap to rebuild
# the lineage graph draws its nodes as HTML inside SVG foreignObjects
NODE = "//*[local-name()='foreignObject']"
LINEAGE_KEYS = ("lineage/run_id", "lineage/config_hash", "lineage/principle_hash", "lineage/code_version")

# The asset graph as Definitions sees it, from a subprocess with the project's environment.
ASSET_GRAPH_SCRIPT = """
import json
from assets_defs.definitions import defs
g = defs.resolve_asset_graph()
print(json.dumps([{"key": k.to_user_string(), "group": g.get(k).group_name,
                   "materializable": g.get(k).is_materializable} for k in g.get_all_asset_keys()]))
"""

# Every asset key linked from the page (/assets/<key>), then one scroll of the list that holds
# them: the catalog is a virtualized table that only renders the rows in view.
COLLECT_AND_SCROLL_JS = """
const links = Array.from(document.querySelectorAll('a[href^="/assets/"]'));
const keys = links.map(a => decodeURIComponent(a.getAttribute('href').slice(8).split(/[?#]/)[0]));
let box = links.length ? links[links.length - 1].parentElement : null;
while (box && !(box.scrollHeight > box.clientHeight + 1 &&
                ['auto', 'scroll'].includes(getComputedStyle(box).overflowY))) box = box.parentElement;
if (box) box.scrollTop += Math.max(100, box.clientHeight * 0.6);
return keys;
"""

# An image that has loaded with a width, in an ancestry that is fully opaque and not animating.
IMAGE_SHOWN_JS = """
const img = arguments[0];
if (!img.complete || !img.naturalWidth) return false;
for (let e = img; e; e = e.parentElement)
  if (getComputedStyle(e).opacity !== '1' || e.getAnimations().length) return false;
return true;
"""

# How many asset nodes of the lineage graph have no status colour yet (or never will: sources).
NODES_LOADING_JS = """
return Array.from(document.querySelectorAll('foreignObject [style*="minimal-bg"]'))
  .filter(e => e.getAttribute('style').includes('--color-background-light')).length;
"""


def _browser_missing() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    return missing


def _missing_message(missing: list[str]) -> str:
    return (f"the browser test needs {', '.join(missing)} "
            "(apt-get install chromium chromium-driver; pip install -e '.[dev]')")


# Skipped (before the session's project is built) only outside CI; under CI the test fails instead.
_MISSING = _browser_missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(_MISSING) and not os.environ.get("CI"), reason=_missing_message(_MISSING))]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def _wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"salmon ui exited with {proc.returncode} before serving:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {SERVER_TIMEOUT_S} s:\n{_tail(log)}")


def _check_png(path: Path) -> None:
    """A real screenshot: a PNG of a decent size that is not one flat colour."""
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 10_000, f"{path}: missing or tiny"
    pixels = mpimg.imread(path)
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000, f"{path}: {pixels.shape}"
    assert pixels[..., :3].std() > 0.02, f"{path}: a blank image"


def test_ui_in_a_browser(project, tmp_path, monkeypatch):
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so this must run: {_missing_message(missing)}")
        pytest.skip(_missing_message(missing))

    import dagster as dg
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    # Selenium Manager is skipped when the driver path is given; should anything reach it anyway,
    # it must not try the network.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")

    copy = copy_project(project, tmp_path / "p")
    root, env = copy
    dagster_home = root / "warehouse" / ".dagster"  # where `salmon ui` points DAGSTER_HOME
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    ui_log = tmp_path / "ui.log"

    with open(ui_log, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "assets_defs.cli", "ui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    driver = None
    try:
        # while the server starts: the asset graph as the Definitions declare it
        graph = json.loads(subprocess.run([sys.executable, "-c", ASSET_GRAPH_SCRIPT], cwd=ROOT, env=env,
                                          capture_output=True, text=True, check=True, timeout=300).stdout)
        all_keys = {a["key"] for a in graph}
        materializable = {a["key"] for a in graph if a["materializable"]}
        groups = {a["group"] for a in graph}
        assert {RUN_ASSET, f"{RUN_ASSET}_rejects", PLOT_ASSET, "principles/self_align"} <= materializable
        _wait_for_server(server, f"{base}/server_info", ui_log)

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        driver.set_window_size(1600, 1000)
        failures = [0]

        def fail(what: str) -> None:
            failures[0] += 1
            shot, html = tmp_path / f"failure-{failures[0]}.png", tmp_path / f"failure-{failures[0]}.html"
            try:
                driver.save_screenshot(str(shot))
                html.write_text(driver.page_source)
            except WebDriverException:
                pass
            raise AssertionError(f"{what} (at {driver.current_url}; screenshot {shot}, page source {html}, "
                                 f"server log {ui_log})\n{_tail(ui_log, 1500)}")

        def wait(condition, what: str, timeout: float = WAIT_S):
            # React re-renders replace nodes between a find and its checks: a stale node is polled
            # again, like a missing one
            try:
                return WebDriverWait(driver, timeout, poll_frequency=0.25,
                                     ignored_exceptions=(StaleElementReferenceException,)).until(condition)
            except TimeoutException:
                pass
            fail(f"timed out after {timeout} s waiting for {what}")

        def click(condition, what: str) -> None:
            # the node can also go stale between the wait and the click: find it again
            for attempt in range(5):
                try:
                    wait(condition, what).click()
                    return
                except StaleElementReferenceException:
                    time.sleep(0.5)
            fail(f"{what} kept going stale")

        def shot(name: str) -> Path:
            path = shots / f"{name}.png"
            assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
            return path

        def button(text: str):
            return EC.element_to_be_clickable((By.XPATH, f"//button[normalize-space()='{text}']"))

        def metadata_row(key: str):
            return wait(EC.presence_of_element_located((By.XPATH, f"//tr[td[1][normalize-space()='{key}']]")),
                        f"the metadata row {key}")

        # 1. Materialize prompt_pool from its asset page; it also yields prompt_pool_rejects (a
        # multi-asset that cannot be subset), which Dagster asks to confirm.
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            runs_before = {r.run_id for r in instance.get_runs()}
        driver.get(f"{base}/assets/{RUN_ASSET}")
        click(button("Materialize"), "the Materialize button")
        launched = (By.XPATH, "//a[normalize-space()='View' and starts-with(@href, '/runs/')]")
        confirm = (By.XPATH, "//*[@role='dialog']//button[normalize-space()='Confirm']")
        first = wait(EC.any_of(EC.element_to_be_clickable(confirm), EC.presence_of_element_located(launched)),
                     "the launch confirmation or the 'Launched run' toast")
        if first.tag_name == "button":
            dialog = wait(EC.presence_of_element_located((By.XPATH, "//*[@role='dialog']")), "the dialog").text
            assert f"{RUN_ASSET}_rejects" in dialog, dialog
            click(EC.element_to_be_clickable(confirm), "the Confirm button")
        run_id = wait(EC.presence_of_element_located(launched), "the 'Launched run' toast") \
            .get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
        assert re.fullmatch(r"[0-9a-f-]{36}", run_id) and run_id not in runs_before, run_id

        # 2. The catalog lists every asset key (scrolling through its virtualized table).
        driver.get(f"{base}/assets")
        seen: set[str] = set()

        def all_listed(d) -> bool:
            seen.update(d.execute_script(COLLECT_AND_SCROLL_JS))
            return all_keys <= seen

        wait(all_listed, "every asset key in the catalog")
        driver.execute_script("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
        wait(EC.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='Materialized']")),
             "asset statuses in the catalog")
        wait(EC.invisibility_of_element_located((By.XPATH, "//*[starts-with(normalize-space(text()), 'Loading')]")),
             "the catalog to finish loading")
        shot("catalog")

        # 3. The global lineage graph: every group, the materializable count, then every group expanded.
        driver.get(f"{base}/asset-groups")
        wait(EC.presence_of_element_located(
            (By.XPATH, f"//button[normalize-space()='Materialize all ({len(materializable)})']")),
            f"'Materialize all ({len(materializable)})' on the lineage graph")
        for group in sorted(groups):
            wait(EC.presence_of_element_located((By.XPATH, f"{NODE}//*[normalize-space(text())='{group}']")),
                 f"group {group} in the lineage graph")
        graph_png = shot("graph")
        ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()  # expand all groups
        wait(EC.presence_of_element_located((By.XPATH, f"{NODE}//*[normalize-space(text())='sft_model']")),
             "asset nodes after expanding the groups")
        try:  # for the screenshot only: the nodes' status colours arrive a moment later (light until
            # then, which only the source assets stay)
            WebDriverWait(driver, 20, poll_frequency=0.25).until(lambda d: d.execute_script(
                NODES_LOADING_JS) <= len(all_keys - materializable))
        except TimeoutException:
            pass
        shot("graph_expanded")

        # 4. benchmark_scores: row count, lineage and the plots, against what the instance recorded.
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey(PLOT_ASSET))
            metadata = event.asset_materialization.metadata
        row_count = metadata["dagster/row_count"].value
        plots = sorted(k for k, v in metadata.items() if "data:image/png;base64," in str(v.value))
        assert row_count > 0 and plots, (row_count, list(metadata))

        driver.get(f"{base}/assets/{PLOT_ASSET}")
        shown = re.compile(rf"Row count\s+({row_count:,}|{row_count})\b")
        wait(lambda d: shown.search(d.find_element(By.TAG_NAME, "body").text),
             f"'Row count {row_count}' on the {PLOT_ASSET} page")
        for key in LINEAGE_KEYS:
            row = metadata_row(key)
            assert str(metadata[key].value) in row.text, (key, metadata[key].value, row.text)
        plot_png = None
        for key in plots:
            row = metadata_row(key)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
            inline = row.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png;base64']")
            if not inline:  # long Markdown sits behind a link that opens a dialog
                row.find_element(By.XPATH, ".//a[normalize-space()='[Show Markdown]']").click()
            img_css = ("img" if inline else "[role='dialog'] img") + "[src^='data:image/png;base64']"

            def rendered(d):  # decoded, and shown: the dialog's fade-in over
                imgs = d.find_elements(By.CSS_SELECTOR, img_css)
                return imgs[0] if imgs and d.execute_script(IMAGE_SHOWN_JS, imgs[0]) else False

            img = wait(rendered, f"the {key} image to render")
            width = driver.execute_script("return arguments[0].naturalWidth", img)
            assert width > 100, (key, width)
            plot_png = shot(f"{PLOT_ASSET}_{key.replace('/', '_')}")
            if not inline:
                click(EC.element_to_be_clickable((By.XPATH, "//*[@role='dialog']//button[normalize-space()='Close']")),
                      "the dialog's Close button")
                wait(EC.invisibility_of_element_located((By.CSS_SELECTOR, "[role='dialog']")), "the dialog to close")

        # 5. The run page shows the run succeed.
        driver.get(f"{base}/runs/{run_id}")
        success = (By.XPATH, "//*[@aria-label='run_success']/following-sibling::*[normalize-space()='Success']")
        failed = (By.XPATH, "//*[@aria-label='run_failed' or @aria-label='run_canceled']")
        outcome = wait(EC.any_of(EC.presence_of_element_located(success), EC.presence_of_element_located(failed)),
                       f"run {run_id} to finish", timeout=RUN_TIMEOUT_S)
        if outcome.text.strip() != "Success":
            fail(f"run {run_id} did not succeed")
        wait(EC.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='RUN_SUCCESS']")),
             "RUN_SUCCESS in the run's event log")
        run_png = shot("run_succeeded")

        # 6. The same, from the instance and the CLI: a new, successful run materialized both assets.
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, run
            for key in (RUN_ASSET, f"{RUN_ASSET}_rejects"):
                assert instance.get_latest_materialization_event(dg.AssetKey(key)).run_id == run_id, key
        assert states(copy)[RUN_ASSET] == "materialized"
    finally:
        if driver is not None:
            driver.quit()
        stop_group(server)
        if os.environ.get("SALMON_SCREENSHOTS"):  # failure screenshots and pages too
            out = Path(os.environ["SALMON_SCREENSHOTS"])
            out.mkdir(parents=True, exist_ok=True)
            for path in [*shots.glob("*.png"), *tmp_path.glob("failure-*")]:
                shutil.copy2(path, out / path.name)

    pngs = sorted(shots.glob("*.png"))
    for path in pngs:
        _check_png(path)
    assert {graph_png, plot_png, run_png} <= set(pngs)
