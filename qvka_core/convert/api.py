"""`convert`: turn a model into another attention variant, with a fidelity report.

Pure functions, one per method (each returns a new `Transformer`; the source is never
modified and the weights it shares with the target, embeddings, norms, MLPs and head, are
copied):

- `to_kv_sharing`: MHA/GQA/MQA with another number of KV heads by mean-pooling K and V
  heads per group (GQA uptraining, Ainslie et al. 2023, arXiv 2305.13245); exact towards
  more heads (replication).
- `to_mla`: partial RoPE + joint SVD of K and V (MHA2MLA, Ji et al. 2025, arXiv 2502.14837).
- `to_qv`: drop K, score against V (the paper's QV, arXiv 2603.15665 §2.5), after folding
  the least-squares map K ≈ V·M into the queries (or, with qv_fit="drop", without: lossy).
- `to_qvka`: least-squares fit of W_ctx and W_K,i on calibration activations (§2.6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from qvka_core.checkpoints.store import LoadedModel
from qvka_core.config import ModelConfig
from qvka_core.convert import mla as mla_mod
from qvka_core.convert.calibration import (
    default_calibration_text,
    input_covariances,
    token_batches,
)
from qvka_core.convert.fidelity import EVAL_TOKENS, compare, held_out_windows
from qvka_core.convert.job import (
    ConvertJob,
    Progress,
    conversion_for,
    conversion_options,
    runner,
    step_ticker,
)
from qvka_core.convert.keyless import qv_layer, qvka_layer
from qvka_core.convert.linalg import few_threads
from qvka_core.convert.report import (
    ConversionReport,
    count_params,
    kv_bytes_per_token,
)
from qvka_core.convert.weights import (
    assemble,
    check_kv_heads,
    check_source,
    extract_dense,
    gqa_state,
    qv_state,
    regroup_kv,
)
from qvka_core.errors import ConfigError
from qvka_core.model import Transformer
from qvka_core.variants.registry import convertible_variants, get_variant

LatentNorm = Literal["fold", "rms"]
QV_DROP_METHOD = "drop K, score against V (post-hoc tying; lossy)"


def methods() -> dict[str, str]:
    """target variant -> its conversion method (from the registry), plus "qv-drop"."""
    out = {v: get_variant(v).conversion.method for v in convertible_variants()}
    return {**out, "qv-drop": QV_DROP_METHOD}


METHODS = methods()  # the built-ins at import time; `methods()` sees runtime registrations


@dataclass
class ConversionResult:
    model: Transformer
    config: ModelConfig
    report: ConversionReport

    def to_loaded(self, source: LoadedModel | None = None) -> LoadedModel:
        """The converted model as a `LoadedModel` (tokenizer and provenance from `source`)."""
        name = f"{self.report.source}->{self.report.target_variant}"
        meta = {"converted_from": self.report.source, "method": self.report.method,
                "options": self.report.to_dict()["options"]}
        if source is not None:
            meta["source_meta"] = source.meta
        return LoadedModel(model=self.model, tokenizer=None if source is None else
                           source.tokenizer, config=self.config, name=name, meta=meta)


_step = step_ticker


def _kv_target(cfg: ModelConfig, kind: str, n_kv_heads: int | None) -> int:
    a = cfg.attention
    if kind == "mha":
        target = a.n_heads
    elif kind == "mqa":
        target = 1
    elif n_kv_heads is None:
        if kind == "gqa":
            raise ConfigError("n_kv_heads is required for --to gqa (it must divide n_heads "
                              f"({a.n_heads}) and nest with the source's {a.n_kv_heads})")
        target = a.n_kv_heads
    else:
        target = n_kv_heads
    if kind in ("mha", "mqa") and n_kv_heads is not None and n_kv_heads != target:
        raise ConfigError(f"n_kv_heads ({n_kv_heads}) conflicts with {kind}, which has "
                          f"{target} KV heads")
    check_kv_heads(a.n_heads, a.n_kv_heads, target)
    return target


def to_kv_sharing(model: Transformer, kind: str, n_kv_heads: int | None = None, *,
                  progress: Progress | None = None) -> Transformer:
    """MHA/GQA/MQA with `n_kv_heads` KV heads: mean-pool or replicate K/V heads per group
    (Ainslie et al. 2023, arXiv 2305.13245). Exact when the pooled heads are identical."""
    check_source(model.cfg)
    target = _kv_target(model.cfg, kind, n_kv_heads)
    cfg = model.cfg.with_variant(kind, n_kv_heads=target)
    tick = _step(progress, 0.0, 1.0, len(model.layers), "pooling KV heads")
    states = []
    for i, layer in enumerate(model.layers):
        states.append(gqa_state(regroup_kv(extract_dense(layer.attn), target)))
        tick(i)
    return assemble(model, cfg, states)


def to_qv(model: Transformer, n_kv_heads: int | None = None,
          covariances: list[Tensor] | None = None, *, progress: Progress | None = None,
          diagnostics: dict | None = None) -> Transformer:
    """QV (arXiv 2603.15665 §2.5): keep V and O, drop K; queries score against V.

    With `covariances` (per layer, of [x ; 1] on calibration text) each KV head's map
    K ≈ V·M is fitted and folded into its queries (`keyless.qv_layer`); the per-layer mean
    R² of that fit goes to `diagnostics`. Without, K is simply dropped: the post-hoc tying
    the BrainChip companion notes report as lossy."""
    check_source(model.cfg)
    target = _kv_target(model.cfg, "qv", n_kv_heads)
    cfg = model.cfg.with_variant("qv", n_kv_heads=target)
    tick = _step(progress, 0.0, 1.0, len(model.layers),
                 "dropping K" if covariances is None else "fitting K ≈ V·M")
    states, r2 = [], []
    for i, layer in enumerate(model.layers):
        dense = regroup_kv(extract_dense(layer.attn), target)
        if covariances is None:
            states.append(qv_state(dense))
        else:
            state, diag = qv_layer(dense, covariances[i], rope=cfg.position == "rope")
            states.append(state)
            r2.append(sum(diag["key_from_value_r2"]) / len(diag["key_from_value_r2"]))
        tick(i)
    if diagnostics is not None and r2:
        diagnostics["key_from_value_r2_per_layer"] = r2
    return assemble(model, cfg, states)


def to_mla(model: Transformer, kv_lora_rank: int | None = None,
           qk_rope_head_dim: int | None = None, *, latent_norm: LatentNorm = "fold",
           covariances: list[Tensor] | None = None, whiten: bool = True,
           progress: Progress | None = None,
           diagnostics: dict[str, Any] | None = None) -> Transformer:
    """MLA by partial RoPE + joint SVD of [W_K,nope ; W_V] (MHA2MLA, Ji et al. 2025,
    arXiv 2502.14837); see `qvka_core.convert.mla` for the exactness conditions."""
    check_source(model.cfg)
    if latent_norm not in ("fold", "rms"):
        raise ConfigError(f"latent_norm must be 'fold' or 'rms', got {latent_norm!r}")
    if latent_norm == "rms" and covariances is None:
        raise ConfigError("latent_norm='rms' needs calibration statistics (covariances)")
    plan = mla_mod.mla_plan(model.cfg, kv_lora_rank, qk_rope_head_dim)
    cfg = mla_mod.mla_config(model.cfg, plan, latent_norm)
    tick = _step(progress, 0.0, 1.0, len(model.layers), "SVD of K/V")
    states, diags = [], []
    for i, layer in enumerate(model.layers):
        state, diag = mla_mod.mla_layer(
            extract_dense(layer.attn), plan, latent_norm=latent_norm,
            input_cov=None if covariances is None else covariances[i],
            norm_eps=cfg.attention.option("latent_norm_eps"), whiten=whiten)
        states.append(state)
        diags.append(diag)
        tick(i)
    if diagnostics is not None:
        diagnostics["per_layer"] = diags
        diagnostics["rope_dims_kept"] = plan["kept_rope"]
        diagnostics["svd_metric"] = "activations" if whiten and covariances else "weights"
    return assemble(model, cfg, states)


def to_qvka(model: Transformer, covariances: list[Tensor], d_ctx: int | None = None,
            n_kv_heads: int | None = None, *, ridge: float = 1e-6, weighting: str = "query",
            progress: Progress | None = None,
            diagnostics: dict[str, Any] | None = None) -> Transformer:
    """QV-Ka (arXiv 2603.15665 §2.6) fitted in closed form so that [G ; V_i]·W_K,i ≈ K_i on
    calibration activations, weighted by the queries' energy ("query", score-space error) or
    not ("none"); see `qvka_core.convert.qvka_fit`."""
    check_source(model.cfg)
    target = _kv_target(model.cfg, "qvka", n_kv_heads)
    cfg = model.cfg.with_variant("qvka", n_kv_heads=target, d_ctx=d_ctx)
    if len(covariances) != len(model.layers):
        raise ConfigError(f"covariances: expected {len(model.layers)} layers, "
                          f"got {len(covariances)}")
    tick = _step(progress, 0.0, 1.0, len(model.layers), "fitting W_ctx and W_K")
    states, diags = [], []
    for i, layer in enumerate(model.layers):
        dense = regroup_kv(extract_dense(layer.attn), target)
        state, diag = qvka_layer(dense, covariances[i], cfg.attention.option("d_ctx"), ridge=ridge,
                                 rope=cfg.position == "rope", weighting=weighting)
        states.append(state)
        diags.append(diag)
        tick(i)
    if diagnostics is not None:
        diagnostics["per_layer"] = diags
    return assemble(model, cfg, states)


def _unpack(loaded: LoadedModel | Transformer, tokenizer: Any) -> tuple[Transformer, Any, str]:
    if isinstance(loaded, LoadedModel):
        return loaded.model, tokenizer if tokenizer is not None else loaded.tokenizer, \
            loaded.name
    if isinstance(loaded, Transformer):
        return loaded, tokenizer, loaded.cfg.name
    raise ConfigError(f"convert needs a LoadedModel or Transformer, got {type(loaded).__name__}")


# --- the built-in variants' conversions (named by their specs as "module:function") -----------
def run_kv_sharing(job: ConvertJob) -> Transformer:
    return to_kv_sharing(job.model, job.to, job.options.get("n_kv_heads"), progress=job.progress)


def run_qv(job: ConvertJob) -> Transformer:
    refit = job.options["qv_fit"] != "drop"
    target = to_qv(job.model, job.options.get("n_kv_heads"), job.covariances if refit else None,
                   progress=job.progress, diagnostics=job.diagnostics)
    if not refit:
        job.method = QV_DROP_METHOD
        job.notes.append("QV by dropping K is post-hoc tying, reported as lossy (BrainChip "
                         "notes); qv_fit='refit' folds K ≈ V·M into the queries first")
    return target


def run_mla(job: ConvertJob) -> Transformer:
    o, cfg = job.options, job.model.cfg
    target = to_mla(job.model, o.get("kv_lora_rank"), o.get("qk_rope_head_dim"),
                    latent_norm=o["latent_norm"], covariances=job.covariances,
                    progress=job.progress, diagnostics=job.diagnostics)
    if cfg.position == "rope" and cfg.attention.n_kv_heads > 1:
        job.notes.append("MLA has one shared RoPE key: the kept RoPE rows of the "
                         f"{cfg.attention.n_kv_heads} KV heads were mean-pooled (lossy)")
    job.report_options["rope_theta"] = target.cfg.attention.rope_theta
    return target


def run_qvka(job: ConvertJob) -> Transformer:
    o = job.options
    job.report_options["ridge"] = job.ridge
    return to_qvka(job.model, job.covariances, o.get("d_ctx"), o.get("n_kv_heads"),
                   ridge=job.ridge, progress=job.progress, weighting=o["qvka_weighting"],
                   diagnostics=job.diagnostics)


def convert(loaded: LoadedModel | Transformer, to: str, *, calib_text: str | None = None,
            tokenizer: Any = None, progress: Progress | None = None,
            eval_text: str | None = None, ridge: float = 1e-6,
            max_eval_tokens: int = EVAL_TOKENS, max_calib_tokens: int = 4096,
            **options: Any) -> ConversionResult:
    """Convert `source` to variant `to` and measure the drift (see `report.py`).

    `options` are the target's variant options (its spec's `Conversion.options`, e.g.
    n_kv_heads, d_ctx, kv_lora_rank, qk_rope_head_dim, n_v_heads, and the conversion knobs
    qv_fit "refit"|"drop", qvka_weighting "query"|"none", latent_norm "fold"|"rms").
    Calibration (when the conversion asks for it: QV-Ka, QV's refit, MLA's latent statistics)
    uses `calib_text`, else the lab's training split (`qvka_core.data.train_text()`) when
    there is a tokenizer, else seeded random token ids. Evaluation uses `max_eval_tokens`
    tokens of `eval_text`, else of the validation splits of the bundled novels
    (`fidelity.held_out_windows`), else random ids.
    `progress(fraction, message)` is called as the work advances.
    """
    model, tok, name = _unpack(loaded, tokenizer)
    conv = conversion_for(to)
    check_source(model.cfg)
    opts = conversion_options(to, **options)
    cfg = model.cfg
    timings: dict[str, float] = {}
    job = ConvertJob(model=model, to=to, options=opts, covariances=None, progress=None,
                     method=conv.method, ridge=ridge)
    report_progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    if conv.calibrate(opts):
        text, calib_source = calib_text, "calib_text"
        if text is None and tok is not None:
            text, calib_source = default_calibration_text()
        batches, how = token_batches(
            text, tok, vocab_size=cfg.vocab_size, max_seq_len=cfg.max_seq_len,
            max_tokens=max_calib_tokens)
        job.diagnostics["calibration"] = f"{calib_source}: {how}" if text is not None else how
        if text is None:
            job.notes.append("calibrated on random token ids; pass calib_text for a data-aware "
                             "fit")
        job.covariances = input_covariances(
            model, batches, progress=lambda f: report_progress(0.25 * f, "calibrating"))
        timings["calibrate_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    job.progress = _sub_progress(progress, 0.25, 0.8)
    with few_threads():  # small float64 algebra: one thread (see linalg.few_threads)
        target = runner(conv)(job)
    timings["convert_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    windows, eval_source = held_out_windows(eval_text, tok, vocab_size=cfg.vocab_size,
                                            max_seq_len=cfg.max_seq_len,
                                            max_tokens=max_eval_tokens)
    report_progress(0.85, f"comparing with the source on {len(windows)} held-out windows")
    fid = compare(model, target, windows)
    timings["report_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    before, after = count_params(model), count_params(target)
    report = ConversionReport(
        source=name, source_variant=cfg.variant, target_variant=to, method=job.method,
        options=_report_options(target.cfg, to, opts, job.report_options),
        eval_source=eval_source, eval_tokens=fid["eval_tokens"],
        js_divergence_per_layer=fid["js_divergence_per_layer"],
        js_divergence_mean=fid["js_divergence_mean"], hidden_cosine=fid["hidden_cosine"],
        loss_before=fid["loss_before"], loss_after=fid["loss_after"],
        eval_windows=fid["eval_windows"], loss_diff_se=fid["loss_diff_se"],
        js_eval_tokens=fid["js_eval_tokens"],
        eval_texts=fid["eval_texts"],
        params_before=before[0], params_after=after[0], attention_params_before=before[1],
        attention_params_after=after[1],
        kv_cache_bytes_per_token_before=kv_bytes_per_token(cfg),
        kv_cache_bytes_per_token_after=kv_bytes_per_token(target.cfg),
        timings_s=timings, diagnostics=job.diagnostics, notes=job.notes)
    report_progress(1.0, "done")
    return ConversionResult(model=target, config=target.cfg, report=report)


def _report_options(cfg: ModelConfig, to: str, opts: dict[str, Any],
                    extra: dict[str, Any]) -> dict[str, Any]:
    """The target's KV heads, each option the conversion took (model options as built),
    then what the converter added (e.g. MLA's rope_theta, QV-Ka's ridge)."""
    spec, a = get_variant(to), cfg.attention
    out: dict[str, Any] = {"n_kv_heads": a.n_kv_heads}
    for name, value in opts.items():
        opt = spec.option(name)
        out[name] = a.option(name) if opt is None or opt.scope == "model" else value
    return {**out, **extra}


def _sub_progress(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda f, m: progress(lo + (hi - lo) * f, m)
