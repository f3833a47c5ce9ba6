"""A report of a real text-only IEMOCAP run opens in headless Chromium with every image loaded."""

import shutil

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    return path


def test_real_iemocap_report_opens_in_chromium(iemocap_minilm_store, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    executable = chromium_path()
    run = tmp_path / "run"
    trained = run_cli("train", str(iemocap_minilm_store), "--model", "bigru", "--set", "epochs=4", "--out", str(run), "--quiet")
    assert trained.returncode == 0, trained.stderr
    reported = run_cli("report", str(run), "--bootstrap", "100")
    assert reported.returncode == 0, reported.stderr
    page_path = run / "report" / "report.html"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))")
        title = page.title()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert {image["alt"] for image in images} == {"confusion_matrix", "robustness", "reliability", "selective_prediction"}
    assert all(image["ok"] for image in images), images
    assert "bigru" in title and "iemocap" in title
