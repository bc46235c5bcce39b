"""HF checkpoint loading: tiny random HF models of each family, saved to disk and loaded with
our loader, must reproduce HF's logits / hidden states and eager attention probabilities.
Broken directories must fail with a CheckpointError naming the tensor or file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qvka_core.checkpoints import load_checkpoint
from qvka_core.checkpoints.hf import config_from_hf, load_hf_directory
from qvka_core.errors import CheckpointError

transformers = pytest.importorskip("transformers")

ATOL = 1e-4


def _randomize(model: torch.nn.Module) -> None:
    """Non-trivial values everywhere (HF inits norms to 1 and biases to 0)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.08
            p.copy_(1.0 + noise if "norm" in name.lower() else noise)


def _gpt2():
    c = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel, c


def _bert():
    c = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=40, type_vocab_size=2)
    return transformers.BertModel, c


def _llama(n_kv: int, tie: bool):
    c = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=6,
                                 num_key_value_heads=n_kv, max_position_embeddings=64,
                                 tie_word_embeddings=tie, rope_theta=5000.0)
    return transformers.LlamaForCausalLM, c


def _qwen2():
    c = transformers.Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=6,
                                 num_key_value_heads=2, max_position_embeddings=64)
    return transformers.Qwen2ForCausalLM, c


def _deepseek(q_lora: int | None):
    c = transformers.DeepseekV2Config(
        vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, first_k_dense_replace=2, q_lora_rank=q_lora, kv_lora_rank=24,
        qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10, max_position_embeddings=64,
    )
    return transformers.DeepseekV2ForCausalLM, c


CASES = {
    "gpt2": _gpt2,
    "bert": _bert,
    "llama-mha-tied": lambda: _llama(6, True),
    "llama-gqa-kv2": lambda: _llama(2, False),
    "llama-mqa": lambda: _llama(1, False),
    "qwen2-bias-gqa": _qwen2,
    "deepseek-v2-mla": lambda: _deepseek(None),
    "deepseek-v2-mla-qlora": lambda: _deepseek(16),
}


def _save(case: str, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    cls, config = CASES[case]()
    model = cls(config)
    _randomize(model)
    out = tmp_path / case
    model.save_pretrained(out)
    model.set_attn_implementation("eager")
    return model.eval(), out


@pytest.mark.parametrize("case", list(CASES))
def test_hf_parity_logits_and_attentions(case: str, tmp_path: Path) -> None:
    hf, path = _save(case, tmp_path)
    loaded = load_checkpoint(str(path))
    ids = torch.tensor([[5, 17, 3, 88, 42, 7, 61, 2, 30, 11]])
    with torch.no_grad():
        ref = hf(input_ids=ids, output_attentions=True)
        ours = loaded.model(ids, impl="eager", return_attentions=True)
    if case == "bert":
        torch.testing.assert_close(ours.hidden_states, ref.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.pooled, ref.pooler_output, atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(ours.logits, ref.logits, atol=ATOL, rtol=0)
    assert len(ours.attentions) == len(ref.attentions) == 2
    for a, b in zip(ours.attentions, ref.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    with torch.no_grad():  # the fast kernel agrees too
        fast = loaded.model(ids, impl="sdpa")
    key = "hidden_states" if case == "bert" else "logits"
    torch.testing.assert_close(getattr(fast, key), getattr(ours, key), atol=ATOL, rtol=0)


def test_mla_cached_decode_matches_hf(tmp_path: Path) -> None:
    hf, path = _save("deepseek-v2-mla-qlora", tmp_path)
    ours = load_hf_directory(path).model
    ids = torch.tensor([[4, 9, 33, 70]])
    want = hf.generate(ids, max_new_tokens=6, do_sample=False)
    got = ours.generate(ids, 6)
    assert got.tolist() == want.tolist()


def test_moe_deepseek_config_is_refused() -> None:
    c = transformers.DeepseekV2Config(hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, first_k_dense_replace=1)
    with pytest.raises(CheckpointError, match="MoE"):
        config_from_hf(c)


# --- broken directories --------------------------------------------------------------------
def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _edit_state(path: Path, edit) -> None:
    state = load_file(str(path / "model.safetensors"))
    edit(state)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s.pop("model.layers.1.self_attn.k_proj.weight"),
         "missing tensors: layers.1.self_attn.k_proj.weight"),
        (lambda s: s.__setitem__("model.layers.0.self_attn.extra.weight", torch.zeros(2)),
         "unexpected tensors: layers.0.self_attn.extra.weight"),
        (lambda s: s.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(63, 48)),
         "layers.0.mlp.up_proj.weight (63, 48)"),
    ],
    ids=["missing", "unexpected", "mis-shaped"],
)
def test_bad_tensors_are_named(edit, named: str, tmp_path: Path) -> None:
    _, path = _save("llama-gqa-kv2", tmp_path)
    _edit_state(path, edit)
    before = _digest(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path))
    assert named in str(err.value)
    assert _digest(path) == before


def test_gpt2_bad_fused_qkv_is_named(tmp_path: Path) -> None:
    _, path = _save("gpt2", tmp_path)
    _edit_state(path, lambda s: s.__setitem__("transformer.h.0.attn.c_attn.weight",
                                              torch.zeros(32, 97)))
    with pytest.raises(CheckpointError, match=r"h\.0\.attn\.c_attn\.weight"):
        load_checkpoint(str(path))


def test_pickle_only_directory_is_refused(tmp_path: Path) -> None:
    _, path = _save("llama-mha-tied", tmp_path)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    before = _digest(path)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*never unpickles"):
        load_checkpoint(str(path))
    assert _digest(path) == before


def test_truncated_safetensors_is_named(tmp_path: Path) -> None:
    _, path = _save("bert", tmp_path)
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:5000])
    before = _digest(path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable"):
        load_checkpoint(str(path))
    assert _digest(path) == before


@pytest.mark.parametrize("text", ['{"model_type": "llama", ', "[1, 2]", '{"model_type": "t5"}'],
                         ids=["truncated-json", "not-an-object", "unknown-family"])
def test_corrupt_config_is_named(text: str, tmp_path: Path) -> None:
    _, path = _save("llama-mha-tied", tmp_path)
    (path / "config.json").write_text(text)
    before = _digest(path)
    with pytest.raises(CheckpointError, match=r"config\.json|model_type"):
        load_checkpoint(str(path))
    assert _digest(path) == before


def test_bad_config_field_is_named(tmp_path: Path) -> None:
    _, path = _save("llama-mha-tied", tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["hidden_size"] = "wide"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(str(path))


def test_load_hf_state_into_existing_model(tmp_path: Path) -> None:
    from qvka_core.checkpoints.hf import load_hf_state
    from qvka_core.model import Transformer

    hf, path = _save("qwen2-bias-gqa", tmp_path)
    model = Transformer(config_from_hf(hf.config))
    load_hf_state(model, load_file(str(path / "model.safetensors")), "qwen2")
    want = load_hf_directory(path).model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, want[key]), key
