"""Presentation mode in Chromium: turned on once by the URL (?present=1), it survives a tour of
every page through the sidebar (and stays in the URL); on every page and Explorer tab the
figures' texts are drawn at >= 20 px, metric numbers (their text node) above normal mode's
36 px, and no metric tile is cut, at 1280 x 720 and 1024 x 768. Screenshots go to
test-output/present-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import settle

pytestmark = pytest.mark.browser
TIMEOUT = 180_000
PAGES = ["Attention Explorer", "Costs", "Convert", "Fine-tune", "Paper", "Home"]
TABS = ["Side by side", "Lines", "Difference", "Overview", "KV groups", "Statistics",
        "Rollout", "POS lens", "Match space"]

# Sizes of every visible text in every drawn figure, and of every metric value; tiles whose
# text is wider than their box (cut with "…").
MEASURE = """() => {
  const visible = el => el.getBoundingClientRect().width > 0;
  const px = el => parseFloat(getComputedStyle(el).fontSize);
  // the element that holds the text: a rule on the tile's outer box says nothing when an
  // inner <p> (Streamlit >= 1.67 wraps metric values in markdown) has its own size
  const textPx = el => {
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.textContent.trim() ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT});
    const node = walk.nextNode();
    return node ? px(node.parentElement) : 0;
  };
  const texts = [...document.querySelectorAll('.js-plotly-plot svg text')]
    .filter(t => t.textContent.trim() && visible(t));
  const metrics = [...document.querySelectorAll('[data-testid="stMetricValue"]')].filter(visible);
  const tiles = [...document.querySelectorAll('[data-testid="stMetric"]')].filter(visible);
  const cut = tiles.flatMap(m => [...m.querySelectorAll('*')])
    .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent);
  return {plots: document.querySelectorAll('.js-plotly-plot').length,
          small: texts.filter(t => px(t) < 20).map(t => t.textContent + ' ' + px(t) + 'px'),
          n_texts: texts.length, metric_px: metrics.map(textPx), cut: cut,
          page_wider: document.querySelector('[data-testid="stMain"]').scrollWidth >
                      document.querySelector('[data-testid="stMain"]').clientWidth + 1};
}"""


def _check(page, where: str) -> dict:
    m = page.evaluate(MEASURE)
    assert not m["small"], f"{where}: figure text under 20 px: {m['small'][:10]}"
    # larger than the 36 px (2.25rem) of normal mode's metric numbers, not merely legible
    assert all(p > 36 for p in m["metric_px"]), f"{where}: metric numbers {m['metric_px']}"
    assert not m["cut"], f"{where}: metric tiles cut: {m['cut'][:6]}"
    assert not m["page_wider"], f"{where}: the page scrolls sideways"
    assert "present=1" in page.url, f"{where}: presentation mode left the URL: {page.url}"
    assert page.get_by_role("switch", name="Presentation mode").is_checked(), where
    return m


def _shot(page, path: Path) -> None:
    """The whole page at the window's width (Streamlit scrolls inside its main block)."""
    size = page.viewport_size
    h = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(int(h) + 40, 5000)})
    page.wait_for_timeout(700)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    page.wait_for_timeout(300)


def _wait_plots(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].every("
        "p => p.querySelector('.main-svg'))", timeout=TIMEOUT)
    page.wait_for_timeout(600)


@pytest.mark.parametrize("size", [(1280, 720), (1024, 768)], ids=["1280x720", "1024x768"])
def test_presentation_mode_tour_reads_from_the_back(app_url: str, browser, shots: Path,
                                                    size: tuple[int, int]) -> None:
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    tag = f"{size[0]}x{size[1]}"
    try:
        page.goto(f"{app_url}/?present=1", wait_until="domcontentloaded")
        page.get_by_role("heading", name="QV-Ka Lab").wait_for(timeout=TIMEOUT)
        page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
        settle(page, TIMEOUT)
        _wait_plots(page)
        assert _check(page, "Home")["n_texts"] > 10
        for title in PAGES:
            nav = page.locator('[data-testid="stSidebarNav"]')
            if not nav.is_visible():  # a narrow window collapses the sidebar
                page.locator('[data-testid="stExpandSidebarButton"], '
                             '[data-testid="stSidebarCollapsedControl"] button').first.click()
            nav.get_by_role("link", name=title).click()
            page.get_by_role("heading").first.wait_for(timeout=TIMEOUT)
            settle(page, TIMEOUT)
            _wait_plots(page)
            if title == "Attention Explorer":
                page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=TIMEOUT)
                for tab in TABS:
                    page.get_by_role("tab", name=tab).click()
                    settle(page, TIMEOUT)
                    _wait_plots(page)
                    _check(page, f"Explorer / {tab} @ {tag}")
                    if tab in ("Side by side", "POS lens", "Match space"):
                        page.locator(".js-plotly-plot:visible").first.evaluate(
                            "el => el.scrollIntoView({block: 'start'})")
                        page.wait_for_timeout(500)
                        page.screenshot(path=str(shots / f"present-{tag}-explorer-"
                                                 f"{tab.split()[0].lower()}.png"))
                        _shot(page, shots / f"present-{tag}-explorer-"
                                            f"{tab.split()[0].lower()}-full.png")
            else:
                _check(page, f"{title} @ {tag}")
                page.screenshot(path=str(shots / f"present-{tag}-{title.lower()}.png"))
                _shot(page, shots / f"present-{tag}-{title.lower()}-full.png")
        assert not page.locator('[data-testid="stException"]').count()
    finally:
        ctx.close()


def test_first_paint_is_titled_with_page_titles_in_the_sidebar(browser) -> None:
    """A fresh server: the very first sidebar a visitor sees lists page titles (not the
    pages/ folder's lowercase file names) and the Home page's title is drawn."""
    from tests.e2e.conftest import serve_app

    with serve_app() as url:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        try:
            page.goto(url, wait_until="domcontentloaded")
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.wait_for(timeout=TIMEOUT)
            # as soon as the sidebar exists; a link's last line is its label (icon first)
            first = [t.strip().splitlines()[-1] for t in nav.locator("a").all_inner_texts()]
            assert "explorer" not in first and "costs" not in first, first
            page.get_by_role("heading", name="QV-Ka Lab").wait_for(timeout=TIMEOUT)
            titles = [t.strip().splitlines()[-1] for t in nav.locator("a").all_inner_texts()]
            assert titles == ["Home", "Attention Explorer", "Decode", "Costs", "Convert",
                              "Fine-tune", "Paper"], titles
            assert page.title() == "QV-Ka Lab"
        finally:
            page.close()
