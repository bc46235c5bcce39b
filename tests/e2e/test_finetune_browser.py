"""Real browser: open the Fine-tune page, launch a short CPU fine-tune of austen-qv, watch the
loss curve get points and then grow while the page refreshes itself, screenshot it, and
cancel the job. The server runs with QVKA_RUNS pointed at a temporary folder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvka_core import jobs
from tests.e2e.conftest import serve_app_with_runs, set_number, settle

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120_000  # ms: first run imports torch; the CPU is shared
POINTS = ".vega-embed svg g.mark-symbol path"  # the loss chart renders as SVG (one per point)


@pytest.fixture(scope="module")
def finetune_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Streamlit server of its own (the shared one has no private runs folder)."""
    runs = tmp_path_factory.mktemp("browser-runs")
    with serve_app_with_runs(runs) as url:
        yield url, runs


def test_finetune_launch_and_live_curve(finetune_server: tuple[str, Path], page,
                                        shots: Path) -> None:
    url, runs = finetune_server
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name="QV-Ka Lab").wait_for(timeout=TIMEOUT)
    page.get_by_role("link", name="Fine-tune").first.click()
    page.get_by_role("heading", name="Fine-tune").wait_for(timeout=TIMEOUT)
    page.get_by_text("Estimate per run").wait_for(timeout=TIMEOUT)
    settle(page)
    set_number(page, "Steps", 3000)  # long enough to watch grow on an idle machine; cancelled
    set_number(page, "Batch", 2)
    set_number(page, "Sequence length", 32)
    name = page.get_by_label("Name prefix")
    name.fill("e2e")
    name.press("Enter")
    settle(page)
    page.get_by_text("Runs: e2e-qv").wait_for(timeout=TIMEOUT)

    t0 = time.monotonic()
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("Queued e2e-qv").wait_for(timeout=TIMEOUT)
    page.locator(POINTS).first.wait_for(timeout=TIMEOUT)  # the fragment polls every 2 s
    first_point_s = time.monotonic() - t0
    n_first = page.locator(POINTS).count()
    page.wait_for_function(f"() => document.querySelectorAll('{POINTS}').length > {n_first}",
                           timeout=TIMEOUT)
    n_later = page.locator(POINTS).count()
    assert n_later > n_first >= 1
    assert page.get_by_text("tokens/s").first.is_visible() or jobs.job_status(
        runs / "e2e-qv")["state"] not in jobs.ACTIVE
    print(f"submit -> first point {first_point_s:.1f} s; points {n_first} -> {n_later}")

    # The runs table fits a 1280 x 720 screen beside the sidebar: no sideways scrolling (the
    # grid is a canvas; its scroller is as wide as all columns together).
    page.set_viewport_size({"width": 1280, "height": 720})
    grid = page.locator('[data-testid="stDataFrame"]').last
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(2500)  # a refresh of the live fragment at the new width
    widths = grid.evaluate("e => { const s = e.querySelector('.dvn-scroller');"
                           " return [s.scrollWidth, s.clientWidth]; }")
    assert widths[0] <= widths[1] + 1, f"runs table scrolls sideways: {widths}"
    page.screenshot(path=str(shots / "finetune-runs-1280x720.png"))

    h = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(h) + 40, 6000)})
    page.wait_for_timeout(700)
    page.screenshot(path=str(shots / "finetune.png"), full_page=True)
    status = jobs.job_status(runs / "e2e-qv")
    if status["state"] in jobs.ACTIVE:
        jobs.cancel("e2e-qv", root=runs)
    final = jobs.wait_for(runs / "e2e-qv", jobs.TERMINAL, timeout_s=120)
    assert final["state"] in ("completed", "cancelled"), final["message"]
