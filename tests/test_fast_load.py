"""Loading a checkpoint builds the model on the meta device and hands it the file's tensors
(no random init first); the result must equal the plain build-then-copy path exactly, for
every position scheme (sinusoidal and ALiBi have non-persistent buffers), tied and untied
heads, and a float16 file read into a float32 model."""

from __future__ import annotations

import pytest
import torch

from qvka_core.checkpoints.store import build_with_state, load_state
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.model import Transformer
from qvka_core.variants import available_variants
from qvka_core.variants.registry import demo_options


def _cfg(variant: str, position: str, tie: bool) -> ModelConfig:
    return ModelConfig(
        attention=AttentionConfig(kind="mha", d_model=32, n_heads=4, position=position),
        n_layers=2, vocab_size=50, ffn_dim=64, max_seq_len=16, tie_embeddings=tie,
    ).with_variant(variant, **demo_options(variant))


@pytest.mark.parametrize("variant", available_variants())
@pytest.mark.parametrize("position,tie", [("rope", True), ("sinusoidal", False),
                                          ("alibi", True), ("agf", False)])
def test_meta_build_equals_the_plain_load(variant: str, position: str, tie: bool) -> None:
    cfg = _cfg(variant, position, tie)
    torch.manual_seed(0)
    source = Transformer(cfg)
    state = {k: v.half() for k, v in source.state_dict().items()}  # a float16 file
    plain = Transformer(cfg)
    load_state(plain, state, source="test")
    fast = build_with_state(cfg, state, source="test")
    assert not any(t.is_meta for t in (*fast.parameters(), *fast.buffers()))
    assert all(p.dtype == torch.float32 and p.requires_grad for p in fast.parameters())
    if tie:
        assert fast.lm_head.weight is fast.tok_emb.weight
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        assert torch.equal(fast.eval()(ids).logits, plain.eval()(ids).logits)
    plain_buffers = dict(plain.named_buffers())
    for name, buf in fast.named_buffers():
        assert torch.equal(buf, plain_buffers[name]), name
