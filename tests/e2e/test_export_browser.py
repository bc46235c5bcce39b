"""Every Explorer and Costs figure exported as SVG and PNG (kaleido, Debian's Chromium) keeps
each label inside the frame and off the other panels, in normal and presentation mode.

The SVG is opened in Chromium and every text element measured (getBoundingClientRect of
the drawn glyphs); the PNG's outermost pixels must be background: a label cut by the frame
would leave ink on the edge.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from qvka_app import costs_view
from qvka_app import explorer_views as views
from qvka_core.analysis import figures, vectors
from qvka_core.analysis.explorer import explore, random_model

pytestmark = pytest.mark.browser
TEXT = "The old captain slowly told the young sailors a long story about storms."
VARIANTS = ("mha", "gqa", "mqa", "mla", "qvka", "qv")

MEASURE = """() => {
  const svg = document.querySelector('svg');
  const frame = svg.getBoundingClientRect();
  const box = el => { const r = el.getBoundingClientRect();
    return {x0: r.left - frame.left, y0: r.top - frame.top, x1: r.right - frame.left,
            y1: r.bottom - frame.top, text: el.textContent}; };
  const texts = sel => [...svg.querySelectorAll(sel)]
    .filter(el => el.textContent.trim() && el.getBoundingClientRect().width > 0).map(box);
  return {width: frame.width, height: frame.height,
          labels: texts('text'), ticks: texts('.xtick text, .ytick text'),
          titles: texts('.annotation-text'),
          images: [...svg.querySelectorAll('.hm image, .heatmaplayer image')].map(box)};
}"""


def _figures(presentation: bool) -> dict[str, object]:
    models = {v: random_model(v) for v in VARIANTS}
    res = explore(models, TEXT, layer=1)
    opts = views.ViewOptions(presentation=presentation)
    three = explore({v: models[v] for v in ("mha", "qvka", "qv")}, TEXT, layer=1)
    out = {
        "side_by_side_6": views.side_by_side(res, opts),
        "side_by_side_3": views.side_by_side(three, opts),
        "difference": views.difference(res, "mha", "qv", opts),
        "divergence": views.divergence(res, "mha", "qv", opts)[0],
        "overview": views.overview(res, "gqa", opts),
        "groups": views.groups(res, "gqa", opts)[0],
        "rollout": views.rollout(res, opts),
        "lines": views.token_lines(res, opts),
        "match_space": vectors.figure(
            {v: vectors.capture(models[v], TEXT, 1) for v in ("mha", "qvka", "qv")}, 0,
            presentation=presentation),
    }
    try:
        out["pos_lens"] = next(iter(views.pos_lens(three, TEXT, opts)[0].values()))
    except Exception as exc:  # noqa: BLE001 - spaCy model absent: that figure only
        print(f"POS lens skipped: {exc}")
    from qvka_core.presets import get_preset

    cfgs = costs_view.variant_configs(get_preset("gpt2"), list(VARIANTS), causal=True)
    out["costs_params"] = costs_view.params_figure(costs_view.params_long(cfgs), presentation)
    out["spectrum"] = costs_view.spectrum_figure(costs_view.spectrum(get_preset("gpt2")),
                                                 presentation)
    return out


def _overlap(a: dict, b: dict, slack: float = 1.0) -> bool:
    return (min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > slack
            and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > slack)


def _check_svg(page, svg: bytes, name: str) -> None:
    page.set_content("<html><body style='margin:0'>" + svg.decode() + "</body></html>")
    m = page.evaluate(MEASURE)
    assert m["labels"], f"{name}: no text drawn"
    outside = [b["text"] for b in m["labels"]
               if b["x0"] < -0.5 or b["y0"] < -0.5 or b["x1"] > m["width"] + 0.5
               or b["y1"] > m["height"] + 0.5]
    assert not outside, f"{name}: labels cut by the frame: {outside[:8]}"
    over = [t["text"] for t in m["ticks"] for im in m["images"] if _overlap(t, im)]
    assert not over, f"{name}: tick labels drawn over a heatmap: {over[:8]}"
    clash = [(a["text"], b["text"]) for i, a in enumerate(m["titles"])
             for b in m["titles"][i + 1:] if _overlap(a, b)]
    assert not clash, f"{name}: titles run into each other: {clash[:4]}"


def _check_png(png: bytes, name: str) -> None:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int32)  # (H, W)
    edge = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert edge.min() > 200, f"{name}: ink on the PNG's edge (a label cut by the frame)"


@pytest.mark.parametrize("presentation", [False, True], ids=["normal", "presentation"])
def test_every_export_keeps_its_labels_inside_the_frame(browser, presentation: bool) -> None:
    ok, reason = figures.export_available()
    if not ok:
        pytest.skip(reason)
    page = browser.new_page()
    failures = []
    try:
        for name, fig in _figures(presentation).items():
            for size in ("figure", "16:9 slide"):
                label = f"{name} @ {size}"
                try:
                    _check_svg(page, figures.to_image(fig, "svg", size=size), label)
                    _check_png(figures.to_image(fig, "png", size=size, scale=1.0), label)
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0])
    finally:
        page.close()
    assert not failures, "\n".join(failures)
