"""Analytic accounting against built models, FlopCounterMode, real caches and hand-worked sums."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qvka_core.accounting import (
    costs,
    decode_intensity,
    flops_breakdown,
    kv_cache_elems_per_token,
    param_breakdown,
)
from qvka_core.config import AttentionConfig, ConfigError, ModelConfig
from qvka_core.measure import measure
from qvka_core.model import Transformer
from qvka_core.presets import get_preset, recost
from qvka_core.variants import available_variants
from qvka_core.variants.registry import demo_options


def _small(**attn: object) -> ModelConfig:
    model = {k: attn.pop(k) for k in list(attn) if k.startswith("m_")}
    return ModelConfig(
        attention=AttentionConfig.make(d_model=32, n_heads=4, n_kv_heads=2, **attn),
        n_layers=2, vocab_size=50, ffn_dim=48, max_seq_len=64,
        **{k[2:]: v for k, v in model.items()},
    )


LAYOUTS = {
    "plain": _small(),
    "biases": _small(qkv_bias=True, o_bias=True, m_mlp_bias=True, m_tie_embeddings=False,
                     m_lm_head_bias=True),
    "agf": _small(position="agf"),
    "alibi-swiglu-rms": _small(position="alibi", m_mlp="swiglu", m_norm="rmsnorm"),
    "learned-encoder": _small(position="learned", causal=False, m_type_vocab_size=2,
                              m_embed_norm=True, m_pooler=True, m_prenorm=False,
                              m_final_norm=False, m_lm_head=False, m_tie_embeddings=False),
    "sinusoidal-nobias-ln": _small(position="sinusoidal", m_norm_bias=False),
    "tied-with-bias": _small(m_lm_head_bias=True),
}
EXTRA = {"mla": [{}, {"q_lora_rank": 16, "kv_lora_rank": 24, "qk_rope_head_dim": 4}],
         "qvka": [{"d_ctx": 12}, {"qvka_cache": "vg", "n_kv_heads": 2}]}
for _v in available_variants():  # every spec's demo options too (e.g. vshared 2 V heads)
    if demo_options(_v) and demo_options(_v) not in EXTRA.get(_v, [{}]):
        EXTRA[_v] = [*EXTRA.get(_v, [{}]), demo_options(_v)]
CASES = [(lay, v, ex) for lay in LAYOUTS for v in available_variants()
         for ex in EXTRA.get(v, [{}])]


def _numel(obj: nn.Module | nn.Parameter) -> int:
    if isinstance(obj, nn.Parameter):
        return obj.numel()
    return sum(p.numel() for p in obj.parameters())


@pytest.mark.parametrize(("layout", "variant", "extra"), CASES)
def test_params_equal_built_model(layout: str, variant: str, extra: dict) -> None:
    cfg = recost(LAYOUTS[layout], variant, **extra)
    model = Transformer(cfg)
    bd = param_breakdown(cfg)
    assert sum(bd.values()) == sum(p.numel() for p in model.parameters())
    n = cfg.n_layers
    attn = model.layers[0].attn
    for key, count in bd.items():
        if key.startswith("attention/"):
            name = key.split("/", 1)[1]
            assert n * _numel(getattr(attn, name)) == count, key
    assert bd["mlp"] == n * _numel(model.layers[0].mlp)
    norms = n * (_numel(model.layers[0].attn_norm) + _numel(model.layers[0].mlp_norm))
    norms += _numel(model.final_norm) if cfg.final_norm else 0
    assert bd["norms"] == norms
    emb = sum(_numel(getattr(model, m)) for m in ("tok_emb", "pos_emb", "type_emb", "embed_norm")
              if hasattr(model, m))
    assert bd["embeddings"] == emb
    assert bd["pooler"] == (_numel(model.pooler) if cfg.pooler else 0)
    if cfg.lm_head and not cfg.tie_embeddings:
        assert bd["lm_head"] == _numel(model.lm_head)
    if cfg.position == "agf":
        assert bd["attention/pos_bias"] == n * cfg.n_heads


def test_paper_section6_table() -> None:
    """notes/paper.md §6: d 1024, h 16, d_h 64, no biases, one attention module."""
    def attn(kind: str, **kw: object) -> int:
        cfg = ModelConfig(attention=AttentionConfig.make(kind=kind, d_model=1024, n_heads=16, **kw),
                          n_layers=1, vocab_size=10, ffn_dim=8)
        return sum(v for k, v in param_breakdown(cfg).items() if k.startswith("attention/"))

    assert attn("mha") == 4_194_304
    assert attn("qv") == 3_145_728
    assert attn("qvka", d_ctx=64) == 3_342_336
    assert attn("qvka", d_ctx=128) == 3_473_408
    assert attn("gqa", n_kv_heads=8) == 3_145_728
    assert attn("mqa") == 2_228_224


def test_deepseek_v2_mla_cache_576_per_layer() -> None:
    """DeepSeek-V2 paper KV table: (d_c + d_R) = 512 + 64 = 576 elements/token/layer."""
    cfg = get_preset("deepseek-v2-lite")
    per_layer = {k: v // cfg.n_layers for k, v in kv_cache_elems_per_token(cfg).items()}
    assert per_layer == {"latent": 512, "k_rope": 64}
    # Full DeepSeek-V2 (128 heads of 128): MHA would cache 2·128·128 = 32,768, ~57x more.
    big = ModelConfig(attention=AttentionConfig.make(kind="mla", d_model=5120, n_heads=128,
                                                head_dim=128, kv_lora_rank=512,
                                                qk_rope_head_dim=64),
                      n_layers=1, vocab_size=10, ffn_dim=8)
    assert sum(kv_cache_elems_per_token(big).values()) == 576
    assert sum(kv_cache_elems_per_token(recost(big, "mha")).values()) == 32_768


def test_llama3_kv_bytes_and_intensity() -> None:
    """Llama-3-8B bf16: 2 (K,V) · 8 kv heads · 128 · 32 layers · 2 bytes = 128 KiB/token."""
    cfg = get_preset("llama3-8b")
    r = costs(cfg, seq_len=8192, batch=2, dtype="bf16")
    assert r.kv_cache_bytes_per_token == 131_072
    assert r.kv_cache_bytes == 131_072 * 8192 * 2
    assert costs(cfg, dtype="fp32").kv_cache_bytes_per_token == 262_144
    # Zadouri et al. 2025: intensity ≈ 2·g_q/m_kv in bf16 -> MHA 1, GQA-4 4, QV (m_kv=1) 2·g.
    assert decode_intensity(recost(cfg, "mha")) == pytest.approx(1.0)
    assert decode_intensity(cfg) == pytest.approx(4.0)
    assert decode_intensity(recost(cfg, "qv", n_kv_heads=8)) == pytest.approx(8.0)
    assert decode_intensity(recost(cfg, "mha"), "fp32") == pytest.approx(0.5)


def test_flops_by_hand_mha() -> None:
    """2·B·S·(matmul weights) + 4·B·S²·d per layer (paper.md §6), full and causal."""
    cfg = recost(_small(m_mlp_bias=True), "mha")
    b, s, d, f, v, n = 3, 10, 32, 48, 50, 2
    weights = 4 * d * d + 2 * d * f
    full = 2 * b * s * (n * weights + d * v) + n * 4 * b * s * s * d
    fb = flops_breakdown(cfg, seq_len=s, batch=b, causal_halving=False)
    assert fb["forward_per_step"] == full
    assert fb["training_per_step"] == 3 * full
    causal = flops_breakdown(cfg, seq_len=s, batch=b)
    assert full - causal["forward_per_step"] == n * 4 * b * d * (s * s - s * (s + 1) // 2)
    assert causal["lm_head"] == 2 * d * v  # counted although tied


@pytest.mark.parametrize(("variant", "extra"), [(v, e) for v in available_variants()
                                                for e in EXTRA.get(v, [{}])])
def test_flops_match_flopcounter(variant: str, extra: dict) -> None:
    """Eager attention materialises the full S x S matrix, so compare without halving."""
    cfg = recost(_small(position="agf", m_mlp="swiglu"), variant, **extra)
    model = Transformer(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model(ids, impl="eager")
    with FlopCounterMode(display=False) as train:
        model(ids, impl="eager").logits.mean().backward()
    fb = flops_breakdown(cfg, seq_len=12, batch=2, causal_halving=False)
    assert fwd.get_total_flops() == pytest.approx(fb["forward_per_step"], rel=0.01)
    # Backward = 2 x forward for every matmul whose input needs a gradient: all of them here.
    assert train.get_total_flops() == pytest.approx(fb["training_per_step"], rel=0.03)


@pytest.mark.parametrize(("variant", "extra"), [(v, e) for v in available_variants()
                                                for e in EXTRA.get(v, [{}])])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kv_bytes_match_real_decode(variant: str, extra: dict, dtype: str) -> None:
    cfg = recost(_small(), variant, **extra)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = Transformer(cfg).to(torch_dtype).eval()
    b, s = 2, 9
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
        model(ids[:, -1:], cache=cache)
    held = sum(c.nbytes for c in cache)
    assert costs(cfg, seq_len=s, batch=b, dtype=dtype).kv_cache_bytes == held
    names = set().union(*(c.tensors for c in cache))
    assert names == set(kv_cache_elems_per_token(cfg))


def test_measure_agrees_and_refuses_big() -> None:
    cfg = recost(get_preset("tiny"), "qvka", qvka_cache="vg")
    m = measure(cfg, seq_len=16, batch=2, backward=True)
    assert m["measured"]["params_total"] == m["analytic"]["params_total"]
    assert m["measured"]["kv_cache_bytes"] == m["analytic"]["kv_cache_bytes"]
    assert abs(m["rel_diff"]["forward_flops"]) < 0.01
    assert abs(m["rel_diff"]["training_flops"]) < 0.03
    enc = measure(get_preset("tiny-encoder"), seq_len=8, backward=True)
    assert enc["measured"]["kv_cache_bytes"] is None
    assert abs(enc["rel_diff"]["training_flops"]) < 0.01  # pooler gets its gradient too
    with pytest.raises(ConfigError, match="200,000,000"):
        measure(get_preset("llama3-8b"), seq_len=8)
    with pytest.raises(ConfigError, match="seq_len"):
        measure(get_preset("tiny"), seq_len=5000)


def test_report_is_json_and_validates() -> None:
    import json

    r = costs(get_preset("gpt2"), seq_len=1024)
    d = json.loads(json.dumps(r.to_dict(include_macs=True)))
    assert d["params_total"] == 124_439_808
    assert d["macs"]["forward_per_step"] * 2 == d["flops"]["forward_per_step"]
    assert d["causal_halving"] is True
    assert costs(get_preset("bert-base")).causal_halving is False
    for bad in ({"seq_len": 0}, {"batch": -1}, {"dtype": "int8"}):
        with pytest.raises(ConfigError):
            costs(get_preset("tiny"), **bad)


def test_big_configs_cost_in_milliseconds() -> None:
    t0 = time.perf_counter()
    for name in ("llama3-8b", "deepseek-v2-lite"):
        for v in available_variants():
            costs(recost(get_preset(name), v), seq_len=8192)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize(("variant", "extra"), [(v, e) for v in available_variants()
                                                for e in EXTRA.get(v, [{}])])
@pytest.mark.parametrize("context", [1, 7])
def test_decode_flops_equal_flop_counter(variant: str, extra: dict, context: int) -> None:
    """One decode step with `context` positions cached attends to context + 1 positions
    (the new token too): the formula equals FlopCounterMode on the eager path."""
    from qvka_core.accounting import decode_flops_per_token

    cfg = recost(_small(), variant, **extra)
    model = Transformer(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, context + 1))
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :-1], cache=cache, impl="eager")
        with FlopCounterMode(display=False) as step:
            model(ids[:, -1:], cache=cache, impl="eager")
    assert step.get_total_flops() == decode_flops_per_token(cfg, context)
