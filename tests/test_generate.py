"""Decoding (qvka_core.decode, `generate` CLI): a cached decode equals full recompute for every
variant and position scheme, the cache is preallocated and its bytes equal the formula at
every step, sampling is seeded, text pieces are readable, bad requests get one error line."""

from __future__ import annotations

import json

import pytest
import torch

from qvka_core import AttentionConfig, ModelConfig, Transformer, available_variants, get_variant
from qvka_core.checkpoints.store import LoadedModel
from qvka_core.cli import main
from qvka_core.decode import Sampling, filtered_logits, generate, stream
from qvka_core.decode.text import PieceDecoder
from qvka_core.errors import ConfigError, DataError
from qvka_core.paths import PROJECT_ROOT
from qvka_core.tokenizer import TextTokenizer

TOKENIZER = TextTokenizer.from_file(PROJECT_ROOT / "assets" / "tokenizer" / "austen-bpe.json")
PROMPT = "It is a truth universally acknowledged"


def cases():
    for kind in available_variants():
        yield pytest.param(kind, {}, id=kind)
    yield pytest.param("qvka", {"qvka_cache": "vg"}, id="qvka-vg")
    yield pytest.param("mla", {"mla_absorb_decode": False}, id="mla-explicit")


def tiny(kind: str, position: str, dtype=torch.float32, **attn) -> LoadedModel:
    if kind not in ("mha", "mla"):
        attn.setdefault("n_kv_heads", 2)
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, position=position, **attn)
    cfg = ModelConfig(attention=a, n_layers=2, vocab_size=TOKENIZER.vocab_size, ffn_dim=48,
                      max_seq_len=40)
    model = Transformer(cfg).eval().to(dtype)
    with torch.no_grad():  # sharper than an init's near-uniform logits: fewer near-ties
        model.lm_head.weight.mul_(30)
    return LoadedModel(model=model, tokenizer=TOKENIZER, config=cfg, name=f"tiny-{kind}")


@pytest.mark.parametrize("kind,extra", list(cases()))
@pytest.mark.parametrize("position", ["rope", "sinusoidal", "agf"])
def test_preallocated_cache_steps_equal_full_recompute(kind, extra, position):
    """Logits of prefill + one-token steps into a capacity cache == one full forward (fp32)."""
    m = tiny(kind, position, **extra).model
    ids = torch.randint(0, TOKENIZER.vocab_size, (1, 14))
    with torch.no_grad():
        full = m(ids).logits  # (1, 14, V)
        cache = m.new_cache(capacity=14)
        steps = [m(ids[:, :6], cache=cache).logits]
        steps += [m(ids[:, t: t + 1], cache=cache).logits for t in range(6, 14)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,extra", list(cases()))
@pytest.mark.parametrize("position", ["rope", "sinusoidal", "agf"])
def test_greedy_stream_is_argmax_of_full_recompute_with_its_probabilities(kind, extra, position):
    loaded = tiny(kind, position, **extra)
    result = generate(loaded, PROMPT, 10, stop_at_eos=False)
    prompt_ids = TOKENIZER.encode(PROMPT).ids
    ids = torch.tensor([prompt_ids + [s.token_id for s in result.steps]])
    with torch.no_grad():
        probs = torch.softmax(loaded.model(ids).logits[0].float(), dim=-1)  # (T, V)
    for step in result.steps:
        row = probs[len(prompt_ids) + step.index - 1]  # the distribution that chose it
        assert step.token_id == int(row.argmax())
        torch.testing.assert_close(torch.tensor([p for _, p in step.top]),
                                   row.topk(5).values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,extra", list(cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cache_bytes_equal_the_formula_at_every_step(kind, extra, dtype):
    loaded = tiny(kind, "rope", dtype=dtype, **extra)
    # elements per position and layer (paper §2; d_h 8, 2 KV heads, MLA defaults d_c = 4·d_h
    # and d_R = d_h / 2, QV-Ka d_ctx = d_h, V-shared 4 K heads + its default 1 V head); a
    # variant without a hand-worked figure is held to its own formula
    per_pos_layer = {"mha": 2 * 4 * 8, "gqa": 2 * 2 * 8, "mqa": 2 * 8, "qv": 2 * 8,
                     "mla": 32 + 4, "qvka": 2 * 2 * 8, "vshared": 4 * 8 + 8}.get(kind)
    if per_pos_layer is None:
        per_pos_layer = sum(get_variant(kind).kv_cache_elems(loaded.config.attention).values())
    if extra.get("qvka_cache") == "vg":
        per_pos_layer = 2 * 8 + 8  # V and G
    size = 4 if dtype == torch.float32 else 2
    result = generate(loaded, PROMPT, 8, stop_at_eos=False)
    n_prompt = len(TOKENIZER.encode(PROMPT).ids)
    assert [s.positions for s in result.steps] == list(range(n_prompt, n_prompt + 8))
    for step in result.steps:
        expected = per_pos_layer * 2 * size * step.positions  # 2 layers
        assert step.kv_bytes == expected == step.kv_bytes_formula
    assert result.dtype == ("fp32" if dtype == torch.float32 else "bf16")


def test_cache_buffers_are_allocated_once_and_written_in_place():
    m = tiny("gqa", "rope").model
    cache = m.new_cache(capacity=12)
    with torch.no_grad():
        m(torch.randint(0, 100, (1, 5)), cache=cache)
        ptrs = {n: t.data_ptr() for n, t in cache[0].tensors.items()}
        for _ in range(7):
            m(torch.randint(0, 100, (1, 1)), cache=cache)
    assert {n: t.data_ptr() for n, t in cache[0].tensors.items()} == ptrs
    assert cache[0].tensors["k"].shape[-2] == 12 and cache[0].length == 12
    assert cache[0].reserved_bytes == cache[0].nbytes == 2 * 2 * 8 * 4 * 12


def test_a_cache_without_capacity_doubles_instead_of_growing_each_step():
    m = tiny("qv", "rope").model
    cache = m.new_cache()
    sizes = []
    with torch.no_grad():
        m(torch.randint(0, 100, (1, 3)), cache=cache)
        for _ in range(10):
            m(torch.randint(0, 100, (1, 1)), cache=cache)
            sizes.append(cache[0].tensors["v"].shape[-2])
    assert sorted(set(sizes)) == [6, 12, 24]  # 3 -> 6 -> 12 -> 24: three regrowths
    assert cache[0].nbytes == 2 * 8 * 4 * 13  # only the 13 filled positions count


def test_same_seed_same_text_other_seed_other_text_and_greedy_ignores_seed():
    loaded = tiny("qvka", "rope")
    s = dict(temperature=1.5, top_k=50, top_p=0.95)
    a, b, c = (generate(loaded, PROMPT, 12, Sampling(**s, seed=k), stop_at_eos=False)
               for k in (7, 7, 8))
    assert [x.token_id for x in a.steps] == [x.token_id for x in b.steps]
    assert [x.token_id for x in a.steps] != [x.token_id for x in c.steps]
    g1, g2 = (generate(loaded, PROMPT, 6, Sampling(0, seed=k), stop_at_eos=False)
              for k in (1, 2))
    assert [x.token_id for x in g1.steps] == [x.token_id for x in g2.steps]
    top1 = generate(loaded, PROMPT, 6, Sampling(1.0, top_k=1, seed=3), stop_at_eos=False)
    assert [x.token_id for x in top1.steps] == [x.token_id for x in g1.steps]


def test_top_p_keeps_the_smallest_set_reaching_p_and_top_k_the_k_largest():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filtered_logits(logits, Sampling(1.0, top_p=0.75)))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75 <= 0.8
    kept = torch.isfinite(filtered_logits(logits, Sampling(1.0, top_p=0.5)))
    assert kept.tolist() == [[True, False, False, False]]
    kept = torch.isfinite(filtered_logits(logits, Sampling(1.0, top_k=3)))
    assert kept.tolist() == [[True, True, True, False]]


def test_byte_level_pieces_are_readable_characters():
    ids = TOKENIZER.encode("Elle a dit café, naïve").ids
    dec = PieceDecoder(TOKENIZER, [])
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) == "Elle a dit café, naïve"
    assert any("é" in p for p in pieces) and not any("Ã" in p for p in pieces)


def test_stream_yields_steps_as_they_are_made_and_stops_at_eos():
    loaded = tiny("mha", "rope")
    first = next(stream(loaded, PROMPT, 5))
    assert first.index == 0 and first.elapsed_s > 0
    with torch.no_grad():  # make the end-of-text token the only choice
        loaded.model.lm_head.bias = torch.nn.Parameter(torch.zeros(TOKENIZER.vocab_size))
        loaded.model.lm_head.bias[TOKENIZER.eos_id] = 1e4
    result = generate(loaded, PROMPT, 5)
    assert result.steps == [] and result.stopped == "eos"


def test_bad_requests_are_refused_with_a_reason():
    loaded = tiny("qv", "rope")
    with pytest.raises(DataError, match="exceeds .* 40 positions"):
        generate(loaded, PROMPT, 40)
    with pytest.raises(DataError, match="empty"):
        generate(loaded, "  ", 3)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate(loaded, PROMPT, 0)
    with pytest.raises(ConfigError, match="top_p"):
        Sampling(1.0, top_p=1.5)
    enc = AttentionConfig.make(kind="mha", d_model=32, n_heads=4, causal=False, position="learned")
    cfg = ModelConfig(attention=enc, n_layers=1, vocab_size=TOKENIZER.vocab_size, ffn_dim=48,
                      max_seq_len=40, lm_head=False, tie_embeddings=False)
    encoder = LoadedModel(Transformer(cfg), TOKENIZER, cfg, "an-encoder")
    with pytest.raises(ConfigError, match="encoder"):
        generate(encoder, PROMPT, 3)


def _cli(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    return (rc, *capsys.readouterr())


def test_cli_json_is_deterministic_under_a_seed_and_complete(capsys):
    argv = ["generate", "--checkpoint", "austen-qv", "--prompt", PROMPT, "--max-new-tokens",
            "9", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.9", "--seed", "5",
            "--ignore-eos", "--json"]
    rc, out, _ = _cli(capsys, *argv)
    assert rc == 0
    first = json.loads(out)
    rc, out, _ = _cli(capsys, *argv)
    second = json.loads(out)
    assert first["text"] == second["text"] and first["token_ids"] == second["token_ids"]
    assert "".join(first["new_tokens"]) == first["text"] and len(first["new_tokens"]) == 9
    n_prompt = len(TOKENIZER.encode(PROMPT).ids)
    assert first["total_tokens"] == n_prompt + 9 and first["dtype"] == "fp32"
    # austen-qv: 2 layers, 4 heads of 32 wide, V only, fp32 (assets/checkpoints/README.md)
    assert first["kv_cache_bytes"] == [2 * 4 * 32 * 4 * (n_prompt + i) for i in range(9)]
    assert first["ttft_s"] > 0 and first["tokens_per_s"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--checkpoint", "minilm-l6", "--prompt", "hi"], "encoder"),
    (["--checkpoint", "austen-mha", "--prompt", "hi", "--max-new-tokens", "500"], "positions"),
    (["--checkpoint", "austen-mha", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["--checkpoint", "austen-mha", "--prompt", "hi", "--max-new-tokens", "0"], "at least 1"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    rc, out, err = _cli(capsys, "generate", *argv)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
