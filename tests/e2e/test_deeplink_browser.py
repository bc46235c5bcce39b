"""A deep link is the first request a fresh server sees (a speaker's bookmark): it must open
through app.py's router (its sidebar titles, page config and presentation mode from the URL),
not as a bare page script, and without any Streamlit internal (qvka_app.shared.page_setup)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import serve_app, settle

pytestmark = pytest.mark.browser


def test_a_deep_link_on_a_fresh_server_opens_through_the_router(browser) -> None:
    with serve_app() as url:  # its own server: nothing has run app.py there yet
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{url}/costs?present=1", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Costs").first.wait_for(timeout=120_000)
        settle(page, 120_000)
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text("Attention Explorer", exact=True).count() == 1  # app.py's titles
        assert nav.get_by_text("explorer", exact=True).count() == 0  # not the folder's names
        assert page.title() == "QV-Ka Lab"
        toggle = page.locator('[data-testid="stSidebar"] label').filter(
            has_text="Presentation mode").locator("input")
        assert toggle.is_checked()  # ?present=1 was read by app.py's toggle
        assert "/costs" in page.url
        page.close()
