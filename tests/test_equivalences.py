"""Variants that are special cases of one another give identical outputs with shared weights."""

from __future__ import annotations

import pytest
import torch

from qvka_core import AttentionConfig, ModelConfig, Transformer


def model(kind: str, n_kv_heads: int | None = None, **kw) -> Transformer:
    a = AttentionConfig.make(kind=kind, d_model=48, n_heads=6, n_kv_heads=n_kv_heads, **kw)
    return Transformer(ModelConfig(attention=a, n_layers=2, vocab_size=40, ffn_dim=64)).eval()


@pytest.mark.parametrize("position", ["rope", "agf", "none"])
def test_mha_equals_gqa_with_all_heads(position):
    mha, gqa = model("mha", position=position), model("gqa", n_kv_heads=6, position=position)
    gqa.load_state_dict(mha.state_dict())
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(gqa(ids).logits, mha(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_mqa_equals_gqa_with_one_kv_head(position):
    mqa, gqa = model("mqa", position=position), model("gqa", n_kv_heads=1, position=position)
    gqa.load_state_dict(mqa.state_dict())
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(gqa(ids).logits, mqa(ids).logits, atol=0, rtol=0)


def test_gqa_equals_mha_with_replicated_kv_heads():
    """The GQA computation is MHA whose K/V heads are copies within each group."""
    gqa, mha = model("gqa", n_kv_heads=2), model("mha")
    state = gqa.state_dict()
    for name in list(state):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = state[name].view(2, 8, 48)  # (Hkv, D, d_model)
            state[name] = w.repeat_interleave(3, dim=0).reshape(6 * 8, 48)  # (H·D, d_model)
    mha.load_state_dict(state)
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(mha(ids).logits, gqa(ids).logits, atol=1e-6, rtol=1e-5)


def test_qv_equals_mha_whose_key_projection_is_the_value_projection():
    """QV (paper §2.5) is MHA with W_K := W_V (no RoPE: rotation applies to both copies)."""
    qv, mha = model("qv", position="none"), model("mha", position="none")
    state = qv.state_dict()
    for name in list(state):
        if name.endswith("v_proj.weight"):
            state[name.replace("v_proj", "k_proj")] = state[name]
    mha.load_state_dict(state)
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(mha(ids).logits, qv(ids).logits, atol=1e-6, rtol=1e-5)


def test_qvka_with_identity_key_map_and_zero_context_equals_qv():
    """K_i = [G ; V_i]·W_K,i with W_K,i = [0 ; I] reduces QV-Ka to QV."""
    qvka, qv = model("qvka", position="rope"), model("qv", position="rope")
    state = qvka.state_dict()
    for name in [n for n in state if n.endswith("k_weight")]:
        w = torch.zeros_like(state[name])  # (Hkv, d_ctx + D, D)
        w[:, -8:, :] = torch.eye(8)
        state[name] = w
    qvka.load_state_dict(state)
    qv.load_state_dict({k: v for k, v in state.items() if "ctx_proj" not in k
                        and "k_weight" not in k})
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(qvka(ids).logits, qv(ids).logits, atol=1e-6, rtol=1e-5)


def test_mla_absorbed_decode_equals_explicit_decode():
    absorbed = model("mla", mla_absorb_decode=True)
    explicit = model("mla", mla_absorb_decode=False)
    explicit.load_state_dict(absorbed.state_dict())
    ids = torch.randint(0, 40, (1, 8))
    outs = []
    for m in (absorbed, explicit):
        cache = m.new_cache()
        m(ids[:, :3], cache=cache)
        outs.append(torch.cat([m(ids[:, t : t + 1], cache=cache).logits for t in range(3, 8)], 1))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
