"""What a newcomer saw cut or shrunk, in Chromium: metric numbers grow (not shrink) in
presentation mode, measured on the element that holds their text; Home's bundled-models
table shows every row without a scroll; the Convert page's buttons and report tiles show
their whole text and the Explorer's tab bar does not scroll, at 1280 x 720 in normal and
presentation mode. Screenshots go to test-output/fit-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvka_core.paths import ASSETS
from tests.e2e.conftest import settle

pytestmark = pytest.mark.browser
TIMEOUT = 180_000
MODES = [False, True]
MODE_IDS = ["normal", "present"]

# Font size of the innermost element holding each match's first visible text node (a CSS
# rule on an outer box says nothing when an inner <p> has its own size).
TEXT_PX = """sel => [...document.querySelectorAll(sel)]
  .filter(el => el.getBoundingClientRect().width > 0).map(el => {
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT,
      {acceptNode: n => n.textContent.trim() ? NodeFilter.FILTER_ACCEPT
                                             : NodeFilter.FILTER_REJECT});
    const node = walk.nextNode();
    return node ? parseFloat(getComputedStyle(node.parentElement).fontSize) : 0;
  })"""

# Elements inside the main block's buttons whose text is wider than their box (cut by "…"),
# and buttons reaching past the main block's right edge.
CUT_BUTTONS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const right = main.getBoundingClientRect().right;
  const buttons = [...main.querySelectorAll('button[data-testid^="stBaseButton"]')]
    .filter(b => b.getBoundingClientRect().width > 0);
  return {labels: buttons.map(b => b.textContent.trim()),
          cut: buttons.filter(b => [b, ...b.querySelectorAll('*')].some(
                 el => el.scrollWidth > el.clientWidth + 1) ||
                 b.getBoundingClientRect().right > right + 1).map(b => b.textContent.trim()),
          tiles: [...main.querySelectorAll('[data-testid="stMetric"] *')].filter(
                 el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent)};
}"""


def _open(browser, url: str, size: tuple[int, int] = (1280, 720)):
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading").first.wait_for(timeout=TIMEOUT)
    settle(page, TIMEOUT)
    return ctx, page


def _url(base: str, path: str, present: bool, query: str = "") -> str:
    params = "&".join(p for p in (query, "present=1" if present else "") if p)
    return f"{base}/{path}" + (f"?{params}" if params else "")


def test_metric_values_grow_in_presentation_mode(app_url: str, browser, shots: Path) -> None:
    px = {}
    for present, tag in zip(MODES, MODE_IDS, strict=True):
        ctx, page = _open(browser, _url(app_url, "costs", present))
        try:
            page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=TIMEOUT)
            settle(page, TIMEOUT)
            px[tag] = page.evaluate(TEXT_PX, '[data-testid="stMetricValue"]')
            page.screenshot(path=str(shots / f"fit-costs-metrics-{tag}.png"))
        finally:
            ctx.close()
    assert px["normal"] and px["present"], px
    assert min(px["present"]) > max(px["normal"]), px  # larger type, not 36 -> 20 px
    assert min(px["present"]) >= 20, px


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["1280x720", "1920x1080"])
def test_home_shows_every_bundled_model_without_a_scroll(app_url: str, browser, shots: Path,
                                                         size: tuple[int, int]) -> None:
    n_models = len(list((ASSETS / "checkpoints").glob("*/meta.json")))
    if n_models < 11:
        pytest.skip("fewer bundled models than a default-height table shows anyway")
    ctx, page = _open(browser, app_url, size)
    try:
        grid = page.locator('.st-key-home_models [data-testid="stDataFrame"]')
        grid.wait_for(timeout=TIMEOUT)
        grid.scroll_into_view_if_needed()
        page.wait_for_timeout(800)
        scroll = grid.evaluate("""g => [...g.querySelectorAll('*')]
          .filter(el => el.scrollHeight > el.clientHeight + 1 &&
                        ['auto', 'scroll'].includes(getComputedStyle(el).overflowY))
          .map(el => [el.scrollHeight, el.clientHeight])""")
        page.screenshot(path=str(shots / f"fit-home-models-{size[0]}x{size[1]}.png"))
        assert not scroll, f"{n_models} bundled models, the table scrolls: {scroll}"
    finally:
        ctx.close()


@pytest.mark.parametrize("present", MODES, ids=MODE_IDS)
def test_convert_buttons_show_their_whole_label(app_url: str, browser, shots: Path,
                                                present: bool) -> None:
    ctx, page = _open(browser, _url(app_url, "convert", present))
    tag = MODE_IDS[present]
    try:
        page.get_by_role("button", name="Convert", exact=True).click()  # austen-mha -> qv
        page.get_by_text("Hidden-state cosine").wait_for(timeout=TIMEOUT)
        settle(page, TIMEOUT)
        page.get_by_text("Hidden-state cosine", exact=True).scroll_into_view_if_needed()
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / f"fit-convert-report-{tag}.png"))
        save = page.get_by_role("button", name="Save", exact=True)
        save.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        m = page.evaluate(CUT_BUTTONS)
        save.evaluate("el => el.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"fit-convert-buttons-{tag}.png"))
        assert {"Save", "Heal on the Fine-tune page", "Export to Hugging Face"} <= set(
            m["labels"]), m["labels"]
        assert not m["cut"], f"{tag}: buttons cut at 1280 x 720: {m['cut']}"
        assert not m["tiles"], f"{tag}: report tiles cut at 1280 x 720: {m['tiles'][:6]}"
    finally:
        ctx.close()


@pytest.mark.parametrize("present", MODES, ids=MODE_IDS)
def test_explorer_tab_bar_fits_without_scrolling(app_url: str, browser, shots: Path,
                                                 present: bool) -> None:
    ctx, page = _open(browser, _url(app_url, "explorer", present, "family=random"))
    tag = MODE_IDS[present]
    try:
        bar = page.locator('[data-testid="stTabs"] [role="tablist"]').first
        bar.wait_for(timeout=TIMEOUT)
        settle(page, TIMEOUT)
        bar.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        widths = bar.evaluate("b => [b.scrollWidth, b.clientWidth]")
        page.screenshot(path=str(shots / f"fit-explorer-tabs-{tag}.png"))
        assert widths[0] <= widths[1] + 1, f"{tag}: the tab bar scrolls ({widths[0]} > " \
                                           f"{widths[1]} px)"
        assert page.get_by_role("tab", name="Match space").is_visible()
    finally:
        ctx.close()
