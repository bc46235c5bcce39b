"""The Decode page in a real Chromium: type a prompt, decode three variants side by side,
watch their texts grow and their cache bars, and check every bar state the page drew
(read every 0.1 s while the tokens stream in) against the formula.

Models: the bundled Austen mha / qv / qvka (2 layers, fp32), quick enough for the default
browser run. SmolLM2 with its QV and QV-Ka conversions is test_decode_smollm2_browser.py
(slow: it converts first on a cold cache); tests/test_generate.py checks the decode itself
for every variant.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import settle

pytestmark = pytest.mark.browser
TIMEOUT = 180_000
# Austen models: 2 layers × 4 heads × 32 wide, fp32 (assets/checkpoints/README.md); bytes
# per cached position: MHA and QV-Ka (kv cache) K + V, QV V only.
PER_POSITION = {"mha": 2 * 2 * 4 * 32 * 4, "qv": 2 * 4 * 32 * 4, "qvka": 2 * 2 * 4 * 32 * 4}
READ_BARS = """() => [...document.querySelectorAll('.kv-bar')].map(el => ({
  variant: el.dataset.variant, positions: +el.dataset.positions,
  measured: +el.dataset.measured, formula: +el.dataset.formula}))"""
TOKENS = "() => document.querySelectorAll('span.tok').length"


def watch_bars(page, n_tokens: int, timeout_ms: int) -> list[dict]:
    """Every cache-bar state the page draws (read every 0.1 s) until `n_tokens` tokens are
    shown and the page settles."""
    seen: set[tuple] = set()
    deadline = time.monotonic() + timeout_ms / 1000
    while page.evaluate(TOKENS) < n_tokens and time.monotonic() < deadline:
        seen.update(tuple(sorted(b.items())) for b in page.evaluate(READ_BARS))
        page.wait_for_timeout(100)
    settle(page, timeout_ms)
    seen.update(tuple(sorted(b.items())) for b in page.evaluate(READ_BARS))
    return [dict(b) for b in sorted(seen)]


def choose(page, label: str, option: str, timeout_ms: int = TIMEOUT) -> None:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    box.locator("input").click()
    box.locator("input").fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    settle(page, timeout_ms)


def test_three_variants_decode_side_by_side(app_url: str, page, shots: Path) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{app_url}/decode", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Decode side by side").wait_for(timeout=TIMEOUT)
    settle(page, TIMEOUT)
    choose(page, "Model family", "Austen: one trained model per variant")
    prompt = page.get_by_label("Prompt")
    prompt.fill("It is a truth universally acknowledged, that a single man")
    prompt.press("Control+Enter")
    settle(page, TIMEOUT)
    page.get_by_role("button", name="Decode", exact=True).click()
    bars = watch_bars(page, 3 * 24, TIMEOUT)  # every bar state drawn while tokens stream in

    texts = page.locator(".decode-text")
    assert texts.count() == 3
    for i in range(3):
        tokens = texts.nth(i).locator("span.tok")
        assert tokens.count() == 24  # the default number of new tokens
        assert texts.nth(i).inner_text().startswith("It is a truth universally")
        assert tokens.first.get_attribute("title").count("%") == 5  # hover: top-5
    ends = {}
    for variant in ["mha", "qv", "qvka"]:
        states = [b for b in bars if b["variant"] == variant and b["positions"] > 0]
        # How many mid-stream states the 0.1 s reads catch depends on the machine (an idle
        # one streams 24 tiny-model tokens before the first read); every one drawn must
        # equal the formula, and the last must hold the prompt and all 24 new tokens.
        assert states, (variant, bars[:6])
        for b in states:
            assert b["measured"] == b["formula"] == PER_POSITION[variant] * b["positions"]
        ends[variant] = max(b["positions"] for b in states)
    assert len(set(ends.values())) == 1 and ends["mha"] > 24, ends  # one prompt, 24 tokens
    final = [page.locator(".kv-bar").nth(i) for i in range(3)]
    assert int(final[1].get_attribute("data-measured")) * 2 == int(
        final[0].get_attribute("data-measured"))  # QV holds half of MHA: V only
    assert page.get_by_text("tokens/s").count() >= 3
    page.screenshot(path=str(shots / "decode-austen-1280x720.png"))
    height = page.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1920, "height": min(height + 40, 2400)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "decode-austen-wide.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.locator('[data-testid="stSidebar"] label').filter(
        has_text="Presentation mode").click()  # the last decode, redrawn large
    page.wait_for_function("() => [...document.querySelectorAll('.decode-text')].every("
                           "el => parseFloat(getComputedStyle(el).fontSize) >= 28)",
                           timeout=TIMEOUT)
    settle(page, TIMEOUT)
    page.locator(".kv-bar").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "decode-austen-presentation.png"))
