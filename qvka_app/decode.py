"""Glue of the Decode page: load the chosen causal models through the app's one model cache
(qvka_app.families), decode them side by side one token each in turn, and draw each
variant's text (hover a token for its top-5 next-token probabilities) and its KV-cache bar
(measured, the formula beside it).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from qvka_app.families import family_variants, load_shown
from qvka_core.accounting import kv_cache_bytes_per_token
from qvka_core.decode import Decode, Sampling, check_request, stream
from qvka_core.decode.stream import dtype_name
from qvka_core.errors import LabError

CAUSAL_FAMILIES = ("austen", "smollm2", "runs")  # MiniLM is an encoder; random is untrained
DEFAULT_VARIANTS = {"austen": ["mha", "qv", "qvka"], "smollm2": ["gqa", "qv", "qvka"]}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]


def families() -> dict[str, list[str]]:
    """The Explorer's families that can generate text, with their variants."""
    return {f: v for f, v in family_variants().items() if f in CAUSAL_FAMILIES}


def default_variants(family: str, options: list[str]) -> list[str]:
    wanted = [v for v in DEFAULT_VARIANTS.get(family, []) if v in options]
    return wanted or options[:3]


@dataclass
class Lane:
    """One variant's column: its decode so far, or why it cannot decode."""

    variant: str
    decode: Decode = field(default_factory=lambda: Decode(0, ""))
    error: str | None = None
    per_token: int = 0  # formula bytes per cached position (accounting)
    prompt_tokens: int = 0


def prepare(family: str, variants: list[str], prompt: str, max_new: int
            ) -> tuple[dict[str, Lane], dict[str, Any]]:
    """Load each variant (shared model cache) and check the request; errors stay per lane."""
    lanes, models = {}, {}
    for v in variants:
        lane = lanes[v] = Lane(v)
        try:
            loaded = load_shown(family, v)
            lane.prompt_tokens = len(check_request(loaded, prompt, max_new))
            lane.per_token = kv_cache_bytes_per_token(loaded.config, dtype_name(loaded.model))
            models[v] = loaded
        except LabError as exc:
            lane.error = str(exc)
    return lanes, models


def decode_side_by_side(lanes: dict[str, Lane], models: dict[str, Any], prompt: str,
                        max_new: int, sampling: Sampling, draw) -> None:
    """Step every variant once per round, calling `draw(lane)` after each new token."""
    streams = {v: stream(models[v], prompt, max_new, sampling, decode=lanes[v].decode)
               for v in models}
    while streams:
        for v in list(streams):
            if next(streams[v], None) is None:
                del streams[v]
            draw(lanes[v])


def bar_scale(lanes: dict[str, Lane], max_new: int) -> int:
    """Bytes of the fullest cache at the end (formula), so every bar shares one scale."""
    return max([lane.per_token * (lane.prompt_tokens + max_new - 1)
                for lane in lanes.values()] + [1])


# --- HTML -------------------------------------------------------------------------------------
def _size(presenting: bool, small: int, large: int) -> int:
    return large if presenting else small


def tooltip(step: Any) -> str:
    lines = [f"step {step.index + 1}: chose {step.text!r}; the model's top 5 were"]
    lines += [f"  {t!r}  {100 * p:.1f}%" for t, p in step.top]
    return "\n".join(lines)


def text_html(prompt: str, decode: Decode, colour: str, presenting: bool) -> str:
    """The prompt in grey, then each new token as a span whose title is its top-5."""
    spans = []
    for i, s in enumerate(decode.steps):
        piece = html.escape(s.text).replace("\n", "⏎<br>")
        shade = "rgba(0,0,0,0.06)" if i % 2 else "rgba(0,0,0,0.0)"
        spans.append(f'<span class="tok" data-step="{s.index}" title="{html.escape(tooltip(s))}"'
                     f' style="background:{shade};border-bottom:2px solid {colour}">{piece}</span>')
    font = _size(presenting, 17, 30)
    body = html.escape(prompt).replace("\n", "<br>")
    return (f'<div class="decode-text" style="font-size:{font}px;line-height:1.45;'
            f'min-height:{4 * font}px;white-space:pre-wrap">'
            f'<span style="color:#888">{body}</span>{"".join(spans)}</div>')


def bar_html(lane: Lane, scale: int, colour: str, presenting: bool) -> str:
    """A bar as wide as the bytes held (measured) with the formula's value beside it."""
    steps = lane.decode.steps
    measured = steps[-1].kv_bytes if steps else 0
    formula = steps[-1].kv_bytes_formula if steps else 0
    positions = steps[-1].positions if steps else 0
    width = 100 * measured / max(scale, 1)
    height, font = _size(presenting, 18, 40), _size(presenting, 13, 24)
    mark = "= formula" if measured == formula else "≠ formula"
    label = (f"KV <b>{_short(measured)}</b> measured {mark} · {positions} positions"
             if presenting else f"KV cache <b>{_bytes(measured)}</b> measured · "
             f"{_bytes(formula)} formula ({mark}) · {positions} positions")
    return (f'<div class="kv-bar" data-variant="{html.escape(lane.variant)}" '
            f'data-measured="{measured}" data-formula="{formula}" '
            f'data-positions="{positions}" style="font-size:{font}px">'
            f'<div style="background:#eee;border-radius:4px;height:{height}px;width:100%">'
            f'<div style="background:{colour};height:{height}px;width:{width:.2f}%;'
            f'border-radius:4px"></div></div>'
            f'{label}</div>')


def stats_line(decode: Decode) -> str:
    rate = f"{decode.tokens_per_s:.1f} tokens/s" if decode.tokens_per_s else "– tokens/s"
    ttft = f"TTFT {1000 * decode.ttft_s:.0f} ms" if decode.ttft_s is not None else "TTFT –"
    end = {"eos": " · stopped at end of text"}.get(decode.stopped, "")
    return f"{len(decode.steps)} tokens · {rate} · {ttft} · {decode.dtype}{end}"


def _short(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB" if n >= 1 << 20 else f"{n / 1024:,.1f} KiB"


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit} ({n:,} B)"
    return f"{n:,} B"


def choices_table(decode: Decode) -> list[dict[str, Any]]:
    """Rows for the next-token table: each step's token and its five candidates."""
    return [{"step": s.index + 1, "token": s.text,
             "top-5 (probability)": "  ".join(f"{t!r} {100 * p:.1f}%" for t, p in s.top)}
            for s in decode.steps]
