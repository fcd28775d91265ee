"""The page at `/` (issue 28), driven as a person would in real headless Chromium (Debian's
`chromium`, which scripts/setup.sh installs) against the running service: key, file, target,
an option, Convert, then the download checked with ffprobe. Screenshots of each test go to
var/screenshots/ (PAGE_SCREENSHOTS elsewhere), to look at."""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveService, create_key, make_audio, probe
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("PAGE_SCREENSHOTS", Path(__file__).resolve().parent.parent / "var" / "screenshots"))
WAIT_MS = 120_000  # for a Download link: the conversion itself takes about a second


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


class Visit:
    """One browser tab on the service's page, with what it asked for and complained about."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.urls: list[str] = []
        self.complaints: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.complaints.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # A 400 the page asked for on purpose is logged by Chromium as a failed resource.
        if message.type == "error" and "status of 400" not in message.text:
            self.complaints.append(message.text)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.fixture()
def visit(browser: Browser, live: LiveService) -> Iterator[Visit]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(f"{live.url}/")
    yield Visit(page)
    context.close()


@pytest.fixture()
def key(live: LiveService) -> str:
    return create_key(live.settings, "page")


def _enter_key(page: Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Tab")  # a change: the page keeps it


def test_a_person_converts_a_file_to_flac_and_downloads_it(visit: Visit, key: str, wav_file: Path,
                                                           tmp_path: Path) -> None:
    page = visit.page
    _enter_key(page, key)
    page.get_by_label("Audio file").set_input_files(wav_file)
    page.get_by_label("Target format").select_option("flac")
    page.get_by_text("Options", exact=True).click()
    page.get_by_label("frequency").select_option("48000")
    page.get_by_role("button", name="Convert").click()
    card = page.locator("#files > li")
    link = card.get_by_role("link", name=re.compile(r"^Download "))
    link.wait_for(timeout=WAIT_MS)
    visit.shot("converted")
    assert link.text_content() == "Download tone.flac"
    assert "48000 Hz" in card.text_content() and "3.00 s" in card.text_content()
    assert card.get_by_role("progressbar", name="Upload of tone.wav").get_attribute("value") == "100"
    with page.expect_download() as started:
        link.click()
    saved = tmp_path / "downloaded.flac"
    started.value.save_as(saved)
    measured = probe(saved)
    assert (measured["codec_name"], int(measured["sample_rate"])) == ("flac", 48000)
    assert round(measured["duration"], 2) == 3.0

    recent = page.locator("#jobs tbody tr").filter(has_text="completed")
    recent.first.wait_for(timeout=WAIT_MS)  # the key's recent jobs follow on their own
    assert recent.first.get_by_role("link", name="Download tone.flac").count() == 1
    page.reload()
    assert page.get_by_label("API key").input_value() == key  # kept in the browser
    assert not [url for url in visit.urls if key in url]  # never in a URL
    assert visit.complaints == []


def test_an_options_400_is_shown_next_to_its_field(visit: Visit, key: str, wav_file: Path) -> None:
    page = visit.page
    _enter_key(page, key)
    page.get_by_label("Audio file").set_input_files(wav_file)
    page.get_by_label("Target format").select_option("mp3")
    page.get_by_text("Options", exact=True).click()
    page.get_by_label("start").fill("ten seconds in")
    page.get_by_role("button", name="Convert").click()
    # Playwright's own waits: a wait_for_function string is eval'd in the page, which its CSP forbids.
    expect(page.locator("#option-start-error")).to_contain_text("pattern")  # the API's message
    visit.shot("option-error")
    expect(page.get_by_label("start")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("start")).to_be_focused()
    assert page.locator("#files > li").count() == 0  # nothing was uploaded
    assert not [url for url in visit.urls if "/upload-file/" in url]


def test_a_wrong_key_is_shown_next_to_the_key(visit: Visit, wav_file: Path) -> None:
    page = visit.page
    _enter_key(page, "not-a-key")
    page.get_by_label("Audio file").set_input_files(wav_file)
    page.get_by_role("button", name="Convert").click()
    expect(page.locator("#api-key-error")).to_contain_text("no such key")
    expect(page.locator("#jobs-note")).to_contain_text("not known")


def test_files_dropped_on_the_page_become_a_job_each(visit: Visit, key: str, audio_dir: Path,
                                                    live: LiveService) -> None:
    page = visit.page
    _enter_key(page, key)
    files = [make_audio(audio_dir / f"dropped-{n}.wav", seconds=1.0) for n in (1, 2)]
    dropped = page.evaluate_handle("""(files) => {
        const transfer = new DataTransfer();
        for (const [name, data] of files) {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, {type: "audio/wav"}));
        }
        return transfer;
    }""", [[path.name, base64.b64encode(path.read_bytes()).decode()] for path in files])
    page.dispatch_event("body", "drop", {"dataTransfer": dropped})
    assert "2 file(s) ready" in page.locator("#audio-file-status").text_content()
    page.get_by_label("Target format").select_option("ogg")
    page.get_by_role("button", name="Convert").click()
    links = page.locator("#files").get_by_role("link", name=re.compile(r"^Download "))
    for name in ("dropped-1.ogg", "dropped-2.ogg"):
        page.locator("#files").get_by_role("link", name=f"Download {name}").wait_for(timeout=WAIT_MS)
    visit.shot("dropped")
    assert links.count() == 2
    jobs = requests.get(f"{live.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, timeout=10).json()
    assert len(jobs) == 2 and all(len(job["input"]) == 1 for job in jobs)  # one job per file

    page.get_by_role("button", name="Delete the job of dropped-1.wav").click()
    page.locator("#jobs tbody tr").nth(1).wait_for(state="detached")
    assert page.locator("#jobs tbody tr").text_content().count("dropped-2.ogg") == 1
    jobs = requests.get(f"{live.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, timeout=10).json()
    assert sorted(job["status"]["code"] for job in jobs) == ["canceled", "completed"]


def test_the_page_loads_only_the_services_own_assets(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "connect-src 'self'" in policy
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "<script>" not in html and " style=" not in html  # the policy allows no inline script or style
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert client.get(asset).status_code == 200, asset
    for label in ("API key", "Audio file", "Target format"):
        assert re.search(rf'<label for="[a-z-]+">{label}</label>', html), label
    assert client.get("/page/page.js").status_code == 200
