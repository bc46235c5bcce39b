"""The Decode page under AppTest: three bundled Austen variants decode one prompt; each lane
shows its text with top-5 tooltips and a cache bar whose measured bytes equal the formula."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from qvka_app import decode as dec

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# Bundled Austen models: 2 layers, 4 heads of 32; fp32 (assets/checkpoints/README.md).
PER_POSITION = {"mha": 2 * 2 * 4 * 32 * 4, "qv": 2 * 4 * 32 * 4, "qvka": 2 * 2 * 4 * 32 * 4}


def test_austen_three_variants_decode_with_bars_equal_to_the_formula() -> None:
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("pages/decode.py").run()
    at.selectbox(key="dec_family").set_value("austen").run()
    assert at.multiselect(key="dec_variants_austen").value == ["mha", "qv", "qvka"]
    at.text_area(key="dec_prompt").input("It is a truth universally acknowledged")
    at.slider(key="dec_max_new").set_value(6)
    at.button(key="dec_go").click().run()
    assert not at.exception and not at.error
    html = [m.value for m in at.markdown]
    bars = [h for h in html if 'class="kv-bar"' in h]
    texts = [h for h in html if 'class="decode-text"' in h]
    assert len(bars) == len(texts) == 3
    for variant, bar, text in zip(["mha", "qv", "qvka"], bars, texts, strict=True):
        measured, formula, positions = (int(re.search(f'data-{k}="(\\d+)"', bar).group(1))
                                        for k in ("measured", "formula", "positions"))
        assert measured == formula == PER_POSITION[variant] * positions
        tokens = re.findall(r'<span class="tok" data-step="\d+" title="([^"]*)"', text)
        assert len(tokens) == 6  # every new token carries its top-5 in a tooltip
        assert all(t.count("%") == 5 for t in tokens)
    stats = [c.value for c in at.caption if "TTFT" in c.value]
    assert len(stats) == 3 and all(s.startswith("6 tokens") and "TTFT" in s for s in stats)
    # The QV bar is half the MHA bar: V only, one shared scale.
    fill = r"background:#[0-9a-f]{6};height:\d+px;width:([\d.]+)%"  # the coloured inner bar
    widths = [float(re.search(fill, b).group(1)) for b in bars]
    assert abs(widths[1] - widths[0] / 2) < 0.01


def test_only_causal_families_are_offered() -> None:
    offered = dec.families()
    assert "minilm" not in offered and "random" not in offered
    assert "austen" in offered


def test_sampled_decode_repeats_under_its_seed() -> None:
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("pages/decode.py").run()
    at.selectbox(key="dec_family").set_value("austen").run()
    at.multiselect(key="dec_variants_austen").set_value(["qv"])
    at.slider(key="dec_max_new").set_value(8)
    at.radio(key="dec_mode").set_value("sampled").run()
    at.number_input(key="dec_temp").set_value(1.2)
    texts = []
    for seed in (4, 4, 5):
        at.number_input(key="dec_seed").set_value(seed)
        at.button(key="dec_go").click().run()
        assert not at.exception and not at.error
        texts.append(next(m.value for m in at.markdown if 'class="decode-text"' in m.value))
    assert texts[0] == texts[1] and texts[0] != texts[2]
