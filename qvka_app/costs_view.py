"""Tables and chart data for the Costs page, from `accounting`, `presets`, `hardware` and
`measure` (analytic first; measured only for small configs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from qvka_core.config import AttentionConfig, ModelConfig

MEASURE_MAX_PARAMS = 30_000_000  # the page measures on CPU only below this size
MEASURE_MAX_TOKENS = 1024


def custom_config(*, d_model: int, n_heads: int, n_kv_heads: int, n_layers: int,
                  ffn_dim: int, vocab_size: int, max_seq_len: int = 4096,
                  causal: bool = True) -> ModelConfig:
    """A Llama-style config from user dimensions; raises ConfigError naming the field."""
    attn = AttentionConfig(kind="gqa", d_model=d_model, n_heads=n_heads,
                           n_kv_heads=n_kv_heads, causal=causal)
    return ModelConfig(attention=attn, n_layers=n_layers, vocab_size=vocab_size,
                       ffn_dim=ffn_dim, max_seq_len=max_seq_len, norm="rmsnorm",
                       mlp="swiglu", activation="silu", name="custom")


def variant_configs(base: ModelConfig, variants: Sequence[str], *, causal: bool,
                    n_kv_heads: int | None = None,
                    options: dict[str, Any] | None = None) -> dict[str, ModelConfig]:
    """`base` recosted as each variant (presets.recost): the key-less variants (family
    "keyless": QV, QV-Ka) keep the model's KV grouping unless `n_kv_heads` asks for another
    (e.g. n_heads: one V head per query head); `options` (variant option -> value, e.g.
    QV-Ka's qvka_cache) go to every variant that declares them."""
    from qvka_core.presets import recost
    from qvka_core.variants.registry import get_variant

    if base.causal != causal:
        base = base.with_attention(causal=causal)
    given = dict(options or {})
    out = {}
    for v in variants:
        spec = get_variant(v)
        opts = {k: x for k, x in given.items() if spec.option(k) is not None and x is not None}
        if spec.family == "keyless" and n_kv_heads is not None:
            opts["n_kv_heads"] = n_kv_heads
        out[v] = recost(base, v, **opts)
    return out


def label(variant: str) -> str:
    """A variant's display name from its spec ("QV-Ka", "V-shared"); unknown names as is."""
    from qvka_core.variants.registry import variant_label

    return variant_label(variant)


def native_variant(base: ModelConfig) -> str:
    """The variant the model itself uses (what the Costs page compares against)."""
    return base.variant


def compare_table(cfgs: dict[str, ModelConfig], *, seq_len: int, batch: int, dtype: str,
                  causal_halving: bool, unit: str = "FLOPs", gpu: str | None = None
                  ) -> pd.DataFrame:
    """One column per variant; rows: params per component, FLOPs, KV, intensity, roofline."""
    from qvka_core.accounting import costs

    div = 2 if unit == "MACs" else 1
    cols: dict[str, dict[str, Any]] = {}
    for v, cfg in cfgs.items():
        r = costs(cfg, seq_len=seq_len, batch=batch, dtype=dtype, causal_halving=causal_halving)
        col: dict[str, Any] = {"params total": r.params_total}
        col.update({f"params · {k}": n for k, n in r.params.items()})
        col["attention params"] = r.attention_params
        for k in ("forward_per_step", "training_per_step", "attention_scores",
                  "attention_values", "forward_per_token"):
            col[f"{unit} · {k.replace('_', ' ')}"] = r.flops[k] / div
        col["KV bytes / token"] = r.kv_cache_bytes_per_token
        col[f"KV bytes @ {seq_len}×{batch}"] = r.kv_cache_bytes
        col[f"{unit} · decode token @ {seq_len}"] = r.decode_flops_per_token / div
        col["decode intensity (FLOP/B)"] = round(r.arithmetic_intensity, 3)
        if gpu:
            from qvka_core.hardware import decode_roofline

            roof = decode_roofline(cfg, gpu, seq_len, batch, dtype)
            col[f"decode tok/s on {gpu} (roofline)"] = round(roof["tokens_per_s"], 1)
            col["decode bound"] = roof["bound"]
        cols[v] = col
    return pd.DataFrame(cols)


def measure_refusal(cfgs: dict[str, ModelConfig], seq_len: int) -> str | None:
    """Why these configs are costed analytically only (None when they can be measured)."""
    from qvka_core.accounting import param_breakdown

    for v, cfg in cfgs.items():
        total = sum(param_breakdown(cfg).values())
        if total > MEASURE_MAX_PARAMS:
            return (f"{v} has {total:,} parameters; measuring builds the model on CPU, which "
                    f"this page does below {MEASURE_MAX_PARAMS:,} (try the 'tiny' preset "
                    f"with a sequence length of at most {MEASURE_MAX_TOKENS})")
        limit = min(MEASURE_MAX_TOKENS, cfg.max_seq_len)
        if seq_len > limit:
            return f"measuring needs a sequence length of at most {limit} for this model"
    return None


def measured_table(cfgs: dict[str, ModelConfig], *, seq_len: int, batch: int, dtype: str
                   ) -> pd.DataFrame | None:
    """Measured vs formula (params, forward FLOPs, KV bytes) or None if too big to build."""
    from qvka_core.measure import measure

    if measure_refusal(cfgs, seq_len):
        return None
    rows = []
    for v, cfg in cfgs.items():
        m = measure(cfg, seq_len=seq_len, batch=batch, dtype=dtype)
        for k in ("params_total", "forward_flops", "kv_cache_bytes"):
            meas, ana = m["measured"][k], m["analytic"][k]
            rel = m["rel_diff"][k]
            rows.append({"variant": v, "quantity": k, "formula": ana, "measured": meas,
                         "difference %": None if rel is None else round(100 * rel, 3)})
    return pd.DataFrame(rows)


def params_long(cfgs: dict[str, ModelConfig]) -> pd.DataFrame:
    from qvka_core.accounting import param_breakdown

    return pd.DataFrame([{"variant": v, "component": k, "params": n}
                         for v, cfg in cfgs.items() for k, n in param_breakdown(cfg).items()])


def kv_vs_context(cfgs: dict[str, ModelConfig], *, dtype: str, batch: int,
                  max_context: int) -> pd.DataFrame:
    from qvka_core.accounting import kv_cache_bytes_per_token

    points = sorted({2 ** i for i in range(6, 20) if 2 ** i <= max_context} | {max_context})
    return pd.DataFrame([{"variant": v, "context": c,
                          "KV GiB": kv_cache_bytes_per_token(cfg, dtype) * c * batch / 2**30}
                         for v, cfg in cfgs.items() for c in points])


def flops_vs_seq(cfgs: dict[str, ModelConfig], *, batch: int, causal_halving: bool,
                 max_seq: int, unit: str = "FLOPs") -> pd.DataFrame:
    from qvka_core.accounting import flops_breakdown

    div = 2 if unit == "MACs" else 1
    points = sorted({2 ** i for i in range(6, 20) if 2 ** i <= max_seq} | {max_seq})
    return pd.DataFrame([{"variant": v, "seq_len": s,
                          f"forward T{unit}": flops_breakdown(
                              cfg, seq_len=s, batch=batch,
                              causal_halving=causal_halving)["forward_per_step"] / div / 1e12}
                         for v, cfg in cfgs.items() for s in points])


def spectrum(base: ModelConfig, dtype: str = "bf16") -> pd.DataFrame:
    """Attention parameters and KV bytes per token of every registered variant on `base`'s
    dimensions (QV and QV-Ka keep its KV grouping); `native` marks the model's own."""
    from qvka_core.accounting import costs
    from qvka_core.presets import recost
    from qvka_core.variants import available_variants

    rows = []
    for v in available_variants():
        r = costs(recost(base, v), seq_len=1, dtype=dtype)
        rows.append({"variant": v, "native": v == base.variant,
                     "attention params": r.attention_params, "params total": r.params_total,
                     f"KV bytes / token ({dtype})": r.kv_cache_bytes_per_token})
    return pd.DataFrame(rows)


def spectrum_figure(df: pd.DataFrame, presentation: bool = False) -> Any:
    """Two bar panels along the spectrum: attention params and KV bytes per token."""
    from plotly.subplots import make_subplots

    from qvka_core.analysis.figures import style

    kv_col = [c for c in df.columns if c.startswith("KV bytes")][0]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("attention parameters", kv_col))
    native = df["native"] if "native" in df else [False] * len(df)
    labels = [label(v) + (" (model)" if n else "")
              for v, n in zip(df["variant"], native, strict=True)]
    line = {"width": [3 if n else 0 for n in native], "color": "#222"}
    fig.add_bar(x=labels, y=df["attention params"], row=1, col=1, marker_color="#4c78a8",
                marker_line=line, showlegend=False)
    fig.add_bar(x=labels, y=df[kv_col], row=1, col=2, marker_color="#f58518",
                marker_line=line, showlegend=False)
    return style(fig, presentation=presentation, height=340)


def human_bytes(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number under 1,024 (short enough for a
    metric tile beside five others)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as a string with thousands separators (mixed rows render reliably)."""
    def fmt(x: Any) -> str:
        if isinstance(x, bool) or not isinstance(x, int | float):
            return str(x)
        if x != x:  # NaN: the variant has no such component
            return "—"
        if isinstance(x, float) and not x.is_integer():
            return f"{x:,.3f}" if abs(x) < 1e6 else f"{x:,.0f}"
        return f"{int(x):,}"

    return df.apply(lambda col: col.map(fmt))


def params_figure(df: pd.DataFrame, presentation: bool = False) -> Any:
    """Stacked parameter bars per variant (df long: variant, component, params).

    Plain graph objects rather than plotly.express: the Costs page rebuilds three figures on
    every change, and express costs ~80 ms a figure on a 2-core machine.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from qvka_core.analysis.figures import style

    variants = list(dict.fromkeys(df["variant"]))
    fig = go.Figure(layout={"barmode": "stack", "title": "Parameters by component",
                            "xaxis_title": "variant", "yaxis_title": "params",
                            "legend_title": "component"})
    palette = qualitative.Dark24  # 24 distinct colours: the default 10 repeat across variants
    for i, (component, part) in enumerate(df.groupby("component", sort=False)):
        by_variant = dict(zip(part["variant"], part["params"], strict=True))
        fig.add_bar(x=variants, y=[by_variant.get(v, 0) for v in variants], name=component,
                    marker_color=palette[i % len(palette)])
    from qvka_core.analysis.figures import font_size

    n = df["component"].nunique()  # legend rows: the figure is at least as tall as its legend
    return style(fig, presentation=presentation,
                 height=max(420, int(160 + 1.6 * font_size(presentation) * n)))


def line_figure(df: pd.DataFrame, x: str, y: str, title: str, presentation: bool = False
                ) -> Any:
    """One log-log line per variant (df long: x, y, variant)."""
    import plotly.graph_objects as go

    from qvka_core.analysis.figures import style

    fig = go.Figure(layout={"title": title, "xaxis": {"type": "log", "title": x},
                            "yaxis": {"type": "log", "title": y}, "legend_title": "variant"})
    for variant, part in df.groupby("variant", sort=False):
        fig.add_scatter(x=part[x], y=part[y], mode="lines+markers", name=str(variant))
    return style(fig, presentation=presentation, height=380)


def roofline_figure(cfgs: dict[str, ModelConfig], *, seq_len: int, batch: int, dtype: str,
                    presentation: bool = False) -> Any:
    """The decode roofline (Williams et al. 2009) as a chart: each variant's FLOPs per byte
    read in one decode step (bars, log scale) against each GPU's ridge point, peak FLOP/s
    over bandwidth (dashed lines). A bar under a line is bandwidth-bound on that GPU; the
    hover gives its roofline tokens/s there."""
    import plotly.graph_objects as go

    from qvka_core.analysis.figures import style
    from qvka_core.hardware import GPUS, decode_roofline

    variants = list(cfgs)
    roofs = {v: {g: decode_roofline(cfg, g, seq_len, batch, dtype) for g in GPUS}
             for v, cfg in cfgs.items()}
    first = next(iter(GPUS))
    hover = ["<br>".join(f"{g}: {r['tokens_per_s']:,.0f} tok/s ({r['bound']})"
                         for g, r in roofs[v].items()) for v in variants]
    fig = go.Figure(go.Bar(x=variants, y=[roofs[v][first]["step_intensity"] for v in variants],
                           marker_color="#4c78a8", name="decode step", hovertext=hover,
                           hoverinfo="x+y+text", showlegend=False))
    dashes = ("dash", "dot", "dashdot", "longdash")
    colours = ("#d62728", "#2ca02c", "#9467bd", "#8c564b")
    for i, (g, gpu) in enumerate(GPUS.items()):  # lines as traces: shapes misread log axes
        ridge = gpu.peak_flops / gpu.bandwidth
        fig.add_scatter(x=variants, y=[ridge] * len(variants), mode="lines",
                        name=f"{g} ridge ({ridge:,.0f})",
                        line={"dash": dashes[i % len(dashes)], "color": colours[i % len(colours)],
                              "width": 2},
                        hovertemplate=f"{g}: ridge point {ridge:,.0f} FLOP/byte<extra></extra>")
    fig.update_layout(title=f"Decode roofline (context {seq_len}, batch {batch})",
                      yaxis={"type": "log", "title": "FLOP / byte read"},
                      xaxis={"title": "variant"}, legend={"title": {"text": "GPU"}})
    return style(fig, presentation=presentation, height=440)


def compact_number(x: Any) -> str:
    """A table cell short enough for six variant columns on a 1024-wide screen:
    124,439,808 -> "124.4 M"; small numbers keep their digits."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if x != x:
        return "—"
    for least, div, suffix in ((1e12, 1e12, " T"), (1e9, 1e9, " G"), (1e6, 1e6, " M"),
                               (1e4, 1e3, " k")):  # 9,999 stays as it is
        if abs(x) >= least:
            return f"{x / div:,.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{x:,.3g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x):,}"


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """`readable`'s short form (k, M, G, T), for the page; the CSV keeps every digit."""
    return df.apply(lambda col: col.map(compact_number))
