"""Issue 15's "done when" in Chromium: SmolLM2, its QV conversion and its QV-Ka conversion
decode one prompt side by side on the Decode page, and every cache bar the page draws while
the tokens stream in equals the variant's formula.

The two conversions are made first, the way `./lab warm` makes them (`convert.warm`, into the
shared on-disk cache the server reads); on a machine where they are cached already that is a
load. The expected bytes are written from SmolLM2's published shape (30 layers, 9 query heads
sharing 3 KV heads of 64), not from the lab's accounting: GQA and QV-Ka (its default "kv"
cache) hold K and V of the 3 KV heads, QV keeps the grouping and holds V only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import settle
from tests.e2e.test_decode_browser import choose, watch_bars

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 300_000  # ms: three 135M models load (and, on a cold cache, convert) on 2 cores
NEW_TOKENS = 24  # the page's default
LAYERS, KV_HEADS, HEAD_DIM = 30, 3, 64
TENSORS = {"gqa": 2, "qv": 1, "qvka": 2}  # cached tensors per position and layer: K+V, V, K+V


@pytest.fixture(scope="module")
def smollm2_bytes_per_element() -> int:
    """Convert SmolLM2 to QV and QV-Ka into the shared cache (as `./lab warm` does) and
    return the element size SmolLM2 loads in."""
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.convert.warm import plan, warm

    warm([it for it in plan(["smollm2"]) if it.variant in ("qv", "qvka")])
    return next(load_checkpoint("smollm2-135m").model.parameters()).element_size()


def test_smollm2_and_its_conversions_decode_side_by_side(
        smollm2_bytes_per_element: int, app_url: str, page, shots: Path) -> None:
    per_position = {v: LAYERS * n * KV_HEADS * HEAD_DIM * smollm2_bytes_per_element
                    for v, n in TENSORS.items()}
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{app_url}/decode", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Decode side by side").wait_for(timeout=TIMEOUT)
    settle(page, TIMEOUT)
    choose(page, "Model family", "SmolLM2-135M + conversions", TIMEOUT)
    variants = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Variants")
    for v in TENSORS:  # the family's default selection is exactly these three
        assert variants.get_by_text(v, exact=True).count() == 1
    prompt = page.get_by_label("Prompt")
    prompt.fill("The key idea of attention is")
    prompt.press("Control+Enter")
    settle(page, TIMEOUT)
    page.get_by_role("button", name="Decode", exact=True).click()
    bars = watch_bars(page, 3 * NEW_TOKENS, TIMEOUT)

    texts = page.locator(".decode-text")
    assert texts.count() == 3
    for i in range(3):
        assert texts.nth(i).locator("span.tok").count() == NEW_TOKENS
        assert texts.nth(i).inner_text().startswith("The key idea of attention is")
    for variant, per in per_position.items():
        states = [b for b in bars if b["variant"] == variant and b["positions"] > 0]
        assert len(states) >= 2, (variant, bars[:6])  # the prompt, then decode steps
        for b in states:
            assert b["measured"] == b["formula"] == per * b["positions"], (variant, b)
    page.screenshot(path=str(shots / "decode-smollm2-1280x720.png"))
