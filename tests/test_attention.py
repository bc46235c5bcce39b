"""The per-variant contract: every registered variant × causal/bidirectional × eager/fast.

Shapes, no NaN, backward runs, eager equals SDPA, cached decoding equals the full forward,
and the bytes held in the cache equal the variant's own accounting of what it caches.
"""

from __future__ import annotations

import pytest
import torch

from qvka_core import AttentionConfig, ModelConfig, Transformer, available_variants, get_variant
from qvka_core.variants.registry import demo_options

VARIANTS = available_variants()
POSITIONS = ["rope", "agf", "alibi", "sinusoidal", "learned", "none"]


def tiny(kind: str, *, causal: bool = True, position: str = "rope", **attn) -> ModelConfig:
    attn.setdefault("n_kv_heads", 2)
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, causal=causal, position=position,
                             **attn)
    return ModelConfig(attention=a, n_layers=2, vocab_size=61, ffn_dim=48, max_seq_len=64)


def variant_cases():
    for kind in VARIANTS:
        yield pytest.param(kind, {}, id=kind)
        if demo := demo_options(kind):  # each spec's demo options, e.g. vshared 2 V heads
            yield pytest.param(kind, {"options": demo}, id=f"{kind}-demo")
    yield pytest.param("mla", {"q_lora_rank": 16}, id="mla-qlora")
    yield pytest.param("mla", {"mla_absorb_decode": False}, id="mla-explicit-decode")
    yield pytest.param("qvka", {"qvka_cache": "vg"}, id="qvka-cache-vg")
    yield pytest.param("qvka", {"d_ctx": 16}, id="qvka-dctx16")
    yield pytest.param("qv", {"n_kv_heads": 4}, id="qv-full-heads")


@pytest.mark.parametrize("kind,extra", list(variant_cases()))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_forward_shapes_finite_and_backward(kind, extra, causal, impl):
    model = Transformer(tiny(kind, causal=causal, **extra))
    ids = torch.randint(0, 61, (3, 11))
    out = model(ids, impl=impl, return_attentions=impl == "eager")
    assert out.logits.shape == (3, 11, 61)
    assert torch.isfinite(out.logits).all()
    if impl == "eager":
        assert len(out.attentions) == 2
        for w in out.attentions:
            assert w.shape == (3, 4, 11, 11)
            torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 11))
            if causal:  # nothing above the diagonal
                assert w.triu(1).abs().max() == 0
    out.logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind,extra", list(variant_cases()))
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_eager_equals_sdpa(kind, extra, position, causal):
    model = Transformer(tiny(kind, causal=causal, position=position, **extra)).eval()
    ids = torch.randint(0, 61, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 9:] = 0  # padded tail in the second row
    with torch.no_grad():
        for attention_mask in (None, mask):
            fast = model(ids, attention_mask=attention_mask, impl="sdpa").logits
            ref = model(ids, attention_mask=attention_mask, impl="eager").logits
            torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,extra", list(variant_cases()))
@pytest.mark.parametrize("position", POSITIONS)
def test_cached_decoding_equals_full_forward(kind, extra, position):
    model = Transformer(tiny(kind, position=position, **extra)).eval()
    ids = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        steps = [model(ids[:, :5], cache=cache).logits]  # prefill 5 tokens
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,extra", list(variant_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cache_bytes_equal_the_variant_formula(kind, extra, dtype):
    cfg = tiny(kind, **extra)
    model = Transformer(cfg).eval().to(dtype)
    batch, seq = 3, 9
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 61, (batch, seq - 1)), cache=cache)
        model(torch.randint(0, 61, (batch, 1)), cache=cache)
    held = sum(c.nbytes for c in cache)
    per_token_layer = sum(get_variant(kind).kv_cache_elems(cfg.attention).values())
    itemsize = torch.finfo(dtype).bits // 8
    assert held == per_token_layer * itemsize * cfg.n_layers * batch * seq


def test_cache_holds_what_the_paper_says():
    """MHA 2·h·d_h, GQA 2·g·d_h, MQA 2·d_h, MLA d_c + d_R, QV V only, QV-Ka K+V or V+G."""
    h, d = 4, 8
    elems = {k: sum(get_variant(k).kv_cache_elems(tiny(k).attention).values()) for k in VARIANTS}
    assert elems["mha"] == 2 * h * d
    assert elems["gqa"] == 2 * 2 * d
    assert elems["mqa"] == 2 * d
    assert elems["mla"] == 4 * d + d // 2  # defaults: d_c = 4·d_h, d_R = d_h / 2
    assert elems["qv"] == 2 * d  # V only, 2 kv heads
    assert elems["qvka"] == 2 * 2 * d
    vg = tiny("qvka", qvka_cache="vg").attention
    assert sum(get_variant("qvka").kv_cache_elems(vg).values()) == 2 * d + d  # V + G (d_ctx=d_h)


def test_qv_has_no_key_and_qvka_derives_it_from_value_and_context():
    qv = Transformer(tiny("qv")).layers[0].attn
    assert not hasattr(qv, "k_proj")
    qvka = Transformer(tiny("qvka", d_ctx=16)).layers[0].attn
    assert qvka.ctx_proj.weight.shape == (16, 32)  # one W_ctx shared by all heads
    assert qvka.k_weight.shape == (2, 16 + 8, 8)  # W_K,i per KV head over [G ; V_i]


def test_qv_rope_rotates_scoring_copy_not_carried_values():
    """With one token, attention is the identity, so the output is o_proj(V) unrotated."""
    cfg = tiny("qv", position="rope", n_kv_heads=4)
    attn = Transformer(cfg).layers[0].attn.eval()
    x = torch.randn(1, 1, 32)
    cache = None
    from qvka_core.attention import LayerCache

    cache = LayerCache(length=7)  # pretend the token sits at position 7 (rotation ≠ identity)
    cache.tensors["v"] = torch.zeros(1, 4, 7, 8)
    out = attn(x, cache=cache).out
    # Zero cached values score exp(0) = 1 each; compare against the hand computation.
    v_new = attn.v_proj(x).view(1, 1, 4, 8).transpose(1, 2)  # (1, 4, 1, 8)
    q = attn.q_proj(x).view(1, 1, 4, 8).transpose(1, 2)
    from qvka_core.positions import apply_rope, rope_cos_sin

    cos, sin = rope_cos_sin(torch.tensor([7]), 8, cfg.attention.rope_theta)
    score_new = (apply_rope(q, cos, sin) * apply_rope(v_new, cos, sin)).sum(-1) / 8**0.5
    p_new = torch.exp(score_new) / (torch.exp(score_new) + 7)  # (1, 4, 1)
    expected = attn.o_proj((p_new[..., None] * v_new).transpose(1, 2).reshape(1, 1, 32))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_agf_bias_is_a_learnable_positive_power_law():
    attn = Transformer(tiny("mha", position="agf")).layers[0].attn
    bias = attn.pos_bias(torch.arange(4), torch.arange(4))  # (H, T, S)
    alpha = attn.pos_bias.strength()
    assert (alpha > 0).all()
    dist = (torch.arange(4)[:, None] - torch.arange(4)).abs()  # (T, S)
    expected = -alpha[:, None, None] * torch.log1p(dist)
    torch.testing.assert_close(bias, expected)
    attn.pos_bias.alpha_raw.data.fill_(-50.0)  # any raw value still gives α > 0
    assert (attn.pos_bias.strength() > 0).all()
    assert attn.pos_bias.alpha_raw.requires_grad


def test_generate_greedy_matches_argmax_of_full_forward():
    model = Transformer(tiny("gqa")).eval()
    prompt = torch.randint(0, 61, (1, 4))
    out = model.generate(prompt, 6)
    assert out.shape == (1, 10)
    with torch.no_grad():
        for t in range(4, 10):
            assert model(out[:, :t]).logits[0, -1].argmax() == out[0, t]


def test_generate_sampling_is_seeded_and_encoders_refuse():
    model = Transformer(tiny("qv")).eval()
    prompt = torch.randint(0, 61, (2, 3))
    a, b = (model.generate(prompt, 5, temperature=1.0, top_k=5,
                           generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b)
    from qvka_core import ConfigError

    with pytest.raises(ConfigError, match="causal"):
        Transformer(tiny("qv", causal=False)).generate(prompt, 2)


def test_rope_tables_made_under_inference_mode_still_train():
    """RoPE tables are shared between calls: one first built under inference_mode must not
    poison a later training step (autograd refuses inference tensors)."""
    from qvka_core.positions import _ROPE_TABLES

    _ROPE_TABLES.clear()
    model = Transformer(tiny("qv", position="rope"))
    ids = torch.randint(0, 61, (1, 7))
    with torch.inference_mode():
        model(ids)
    model(ids).logits.mean().backward()
    assert model.layers[0].attn.q_proj.weight.grad is not None


@pytest.mark.parametrize("kind", VARIANTS)
@pytest.mark.parametrize("position", ["rope", "agf"])
def test_forward_is_one_graph_with_no_read_back_from_the_device(kind, position):
    """No `.item()`/`int(tensor)` on the hot path: on a GPU each would stall the stream once
    per layer, and under torch.compile each splits the graph (RoPE used to do both)."""
    model = Transformer(tiny(kind, position=position))
    explained = torch._dynamo.explain(model)(torch.randint(0, 61, (2, 9)))
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_rope_model_compiles_once() -> None:
    """Filling the shared RoPE table inside the first compiled call made the guard on that
    table fail on the second call: every benchmark paid two compilations."""
    from torch._dynamo.testing import CompileCounter

    from qvka_core import positions

    positions._ROPE_TABLES.clear()  # a cold process, as in benchmarks/mfu.py --compile
    torch._dynamo.reset()
    counter = CompileCounter()
    model = Transformer(tiny("gqa", position="rope")).eval()
    compiled = torch.compile(model, backend=counter)
    x = torch.randint(0, 61, (2, 9))
    for _ in range(3):
        out = compiled(x)
    assert counter.frame_count == 1
    torch.testing.assert_close(out.logits, model(x).logits)  # in-graph angles = the table's
