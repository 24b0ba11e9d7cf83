"""A page on another origin, in a real headless Chromium (Debian's, driven by Playwright),
using the public sandrun API as browser pages do: CORS lets it; the token API stays shut."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import no_service
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.slow

PAGES = Path(__file__).parent / "pages"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        no_service("no Chromium: apt-get install chromium (scripts/test does, as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        no_service("no Playwright: pip install -e '.[dev]'")
    return str(found)


@pytest.fixture
def static_site() -> Iterator[str]:
    """The page, from a plain HTTP server on a port of its own (another origin)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGES))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def test_a_page_on_another_origin_runs_a_job_and_cannot_reach_v1(
    tmp_path: Path, chromium: str, static_site: str
) -> None:
    from playwright.sync_api import sync_playwright

    cluster = Cluster(tmp_path, db=str(tmp_path / "server.db"))
    cluster.make_tokens()
    cluster.start_server()
    try:
        cluster.start_agent("w1", cpus=2)
        with sync_playwright() as p:
            # --no-sandbox: Chromium's own sandbox will not start as root (CI runs as root).
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"{static_site}/public_api.html?server={cluster.url}")
                page.wait_for_function("document.title === 'done'", timeout=90_000)
                seen = json.loads(page.text_content("#out") or "{}")
            finally:
                browser.close()
    finally:
        cluster.stop()
    assert "error" not in seen, seen
    assert seen["status"] == "completed"
    assert seen["logs"]["stdout"] == "hello from a page\n"
    assert "result.txt" in seen["outputs"]
    assert seen["download"] == "42"
    assert seen["health"] == "healthy"
    # The browser blocked both: no CORS answer from /v1, preflighted or simple.
    assert seen["v1_with_token"] == "refused: TypeError"
    assert seen["v1_plain"] == "refused: TypeError"
