"""V-shared (paper §8) exported to stock Hugging Face classes: K has one head per query head,
each shared V head is repeated for its group, so the twin is plain multi-head attention
(num_key_value_heads = n_heads). Stock transformers (no remote code) must reproduce the lab's
logits, attention and greedy tokens; the folder loads back as V-shared, bit for bit; the card
says the exported cache is larger; layouts no stock class computes are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qvka_core.checkpoints import load_checkpoint, save_checkpoint
from qvka_core.checkpoints.store import LoadedModel
from qvka_core.cli import main
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.export import export_model
from qvka_core.model import Transformer

transformers = pytest.importorskip("transformers")

TOL = 1e-5
IDS = torch.tensor([[5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71, 2]])  # (1, T)


def _vshared(layout: str, n_v: int, *, position: str | None = None, **attn) -> ModelConfig:
    """A tiny V-shared model in one of the lab's layouts (6 or 4 query heads of 8)."""
    llama = layout == "llama"
    encoder = layout == "bert"
    pos = position or ("learned" if layout in ("gpt2", "bert") else "rope")
    biases = {"qkv_bias": True, "o_bias": True} if layout in ("gpt2", "bert") else {}
    a = AttentionConfig(kind="vshared", d_model=48 if llama else 32, n_heads=6 if llama else 4,
                        position=pos, causal=not encoder, options={"n_v_heads": n_v},
                        **{**biases, **attn})
    common = dict(attention=a, n_layers=2, vocab_size=97, ffn_dim=64, max_seq_len=40,
                  name=f"tiny-{layout}-vshared{n_v}")
    if llama:
        return ModelConfig(**common, norm="rmsnorm", norm_eps=1e-6, mlp="swiglu",
                           activation="silu", tie_embeddings=False)
    if encoder:
        return ModelConfig(**common, norm="layernorm", norm_eps=1e-12, prenorm=False,
                           mlp="gelu", activation="gelu", mlp_bias=True, tie_embeddings=False,
                           lm_head=False, type_vocab_size=2, embed_norm=True, pooler=True,
                           final_norm=False)
    if layout == "gpt2":
        return ModelConfig(**common, norm="layernorm", mlp="gelu", activation="gelu_tanh",
                           mlp_bias=True)
    return ModelConfig(**common, norm="layernorm", mlp="gelu", activation="gelu")  # Austen


CASES = {  # case -> (config, the stock class it must become)
    "llama-one-v": (_vshared("llama", 1), "LlamaForCausalLM"),
    "llama-two-v": (_vshared("llama", 2), "LlamaForCausalLM"),
    "llama-three-v-biases": (_vshared("llama", 3, qkv_bias=True, o_bias=True),
                             "LlamaForCausalLM"),
    "qwen2-two-v": (_vshared("llama", 2, qkv_bias=True), "Qwen2ForCausalLM"),
    "gpt2-two-v": (_vshared("gpt2", 2), "GPT2LMHeadModel"),
    "bert-one-v": (_vshared("bert", 1), "BertModel"),
    "neox-two-v": (_vshared("neox", 2), "GPTNeoXForCausalLM"),
}


def _lab(cfg: ModelConfig, seed: int = 0) -> LoadedModel:
    model = Transformer(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial values everywhere (norms near 1, biases non-zero)
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(1.0 + noise if "norm" in name else noise)
    return LoadedModel(model=model, tokenizer=None, config=cfg, name=cfg.name)


def _stock(directory: Path, encoder: bool = False):
    cls = transformers.AutoModel if encoder else transformers.AutoModelForCausalLM
    return cls.from_pretrained(str(directory), attn_implementation="eager",
                               dtype=torch.float32).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_stock_transformers_computes_the_vshared_model(case: str, tmp_path: Path) -> None:
    cfg, stock_class = CASES[case]
    lab = _lab(cfg)
    export_model(lab, tmp_path / "out", verify=False)
    stock = _stock(tmp_path / "out", encoder=not cfg.causal)
    assert type(stock).__name__ == stock_class
    with torch.no_grad():
        mine = lab.model(IDS, impl="eager", return_attentions=True)
        theirs = stock(input_ids=IDS, attention_mask=torch.ones_like(IDS),
                       output_attentions=True)
    if cfg.causal:
        torch.testing.assert_close(theirs.logits, mine.logits, atol=TOL, rtol=0)
        assert torch.equal(theirs.logits.argmax(-1), mine.logits.argmax(-1))
    else:
        torch.testing.assert_close(theirs.last_hidden_state, mine.hidden_states, atol=TOL,
                                   rtol=0)
    assert len(theirs.attentions) == cfg.n_layers
    for a, b in zip(theirs.attentions, mine.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_the_llama_twin_is_mha_with_each_groups_v_rows_repeated(tmp_path: Path) -> None:
    """num_key_value_heads = n_heads; head i's v_proj rows are V head i // (H / G)'s rows."""
    cfg, _ = CASES["llama-two-v"]
    lab = _lab(cfg, seed=4)
    export_model(lab, tmp_path / "out", verify=False)
    hf_cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf_cfg["num_attention_heads"] == 6 and hf_cfg["num_key_value_heads"] == 6
    hf = load_file(str(tmp_path / "out" / "model.safetensors"))
    d = 8  # 48 / 6 heads
    for layer in range(2):
        attn = lab.model.layers[layer].attn
        w_v = hf[f"model.layers.{layer}.self_attn.v_proj.weight"]
        assert w_v.shape == (6 * d, 48)
        for head in range(6):
            group = head // 3  # 6 query heads, 2 V heads: heads 0-2 share V 0, 3-5 V 1
            assert torch.equal(w_v[head * d:(head + 1) * d],
                               attn.v_proj.weight[group * d:(group + 1) * d].detach())
        assert torch.equal(hf[f"model.layers.{layer}.self_attn.k_proj.weight"],
                           attn.k_proj.weight.detach())


def test_stock_greedy_decoding_with_its_cache_matches_the_lab(tmp_path: Path) -> None:
    """The stock class decodes with its own (n_heads V) cache; the lab with its shared V."""
    cfg, _ = CASES["llama-two-v"]
    lab = _lab(cfg, seed=5)
    export_model(lab, tmp_path / "out", verify=False)
    stock = _stock(tmp_path / "out")
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    theirs = stock.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True,
                            pad_token_id=0)
    assert torch.equal(theirs, lab.model.generate(prompt, 12))


@pytest.mark.parametrize("case", ["llama-three-v-biases", "gpt2-two-v", "bert-one-v"])
def test_the_export_loads_back_as_vshared_bit_for_bit(case: str, tmp_path: Path) -> None:
    cfg, _ = CASES[case]
    lab = _lab(cfg, seed=3)
    export_model(lab, tmp_path / "out", verify=False)
    # V comes back from the twin's repeated rows, not from a second copy in the sidecar.
    assert not (tmp_path / "out" / "qvka_lab.safetensors").exists()
    back = load_checkpoint(str(tmp_path / "out"))
    assert back.config == cfg and back.config.attention.option("n_v_heads") == \
        cfg.attention.option("n_v_heads")
    want, got = lab.model.state_dict(), back.model.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_an_export_whose_v_copies_drifted_loads_as_stock_mha(tmp_path: Path) -> None:
    """Fine-tuned elsewhere, the V copies of a group differ: the folder is no longer V-shared,
    so it loads as what it now computes."""
    lab = _lab(CASES["llama-two-v"][0])
    export_model(lab, tmp_path / "out", verify=False)
    path = tmp_path / "out" / "model.safetensors"
    state = load_file(str(path))
    state["model.layers.1.self_attn.v_proj.weight"][8:16] += 0.01  # head 1, not head 0
    save_file(state, str(path), metadata={"format": "pt"})
    back = load_checkpoint(str(tmp_path / "out"))
    assert back.config.variant == "mha"
    assert "stock twin" in back.meta["restore"]


def test_the_card_says_the_exported_cache_is_larger(tmp_path: Path) -> None:
    """Llama case: 2 layers, 6 heads of 8, 2 V heads. Lab cache per token per layer: K 48 +
    V 16 elements; the stock Llama caches K 48 + V 48. bf16: 2 bytes each."""
    lab = _lab(CASES["llama-two-v"][0])
    export_model(lab, tmp_path / "out", verify=False)
    card = (tmp_path / "out" / "README.md").read_text()
    lab_bytes, stock_bytes = 2 * (48 + 16) * 2, 2 * (48 + 48) * 2
    assert "**larger**" in card and "6 V heads a layer" in card and "2 shared V heads" in card
    assert f"{stock_bytes:,} B per token for this export against {lab_bytes:,} B" in card
    assert f"| KV cache per token (bf16, all layers) | {lab_bytes:,} B | {stock_bytes:,} B |" \
        in card
    assert f"{2 * 48:,} V elements per token" in card and f"({2 * 16:,})" in card


@pytest.mark.parametrize("cfg, words", [
    (_vshared("neox", 2, position="agf"), "AGF"),
    (_vshared("neox", 1, position="alibi"), "ALiBi"),
    (_vshared("neox", 2, position="sinusoidal"), "sinusoidal"),
    (_vshared("llama", 2).replace(norm="layernorm"), "no stock class has a layernorm + swiglu"),
])
def test_vshared_layouts_without_a_stock_class_are_refused_in_one_line(cfg, words,
                                                                       tmp_path) -> None:
    with pytest.raises(CheckpointError) as err:
        export_model(_lab(cfg), tmp_path / "out", verify=False)
    message = str(err.value)
    assert "\n" not in message and words in message and "vshared" in message
    assert not (tmp_path / "out").exists()


def test_variants_lists_vshared_as_exportable_and_a_toy_is_refused(capsys) -> None:
    """The exportable list comes from the exporter: a runtime-registered variant with no
    rewrite is listed as not exportable and refused in one line naming the exportable ones."""
    import dataclasses

    from qvka_core.variants.registry import get_variant, register_variant, unregister_variant

    register_variant(dataclasses.replace(get_variant("mha"), name="toy", conversion=None,
                                         description="a toy registered by a test"))
    try:
        assert main(["variants", "--json"]) == 0
        rows = {r["name"]: r["hf_export"] for r in json.loads(capsys.readouterr().out)}
        assert rows["vshared"] and rows["qvka"] and rows["mla"] and not rows["toy"]
        cfg = _vshared("llama", 2)
        toy = cfg.replace(attention=cfg.attention.replace(kind="toy", options=()))
        with pytest.raises(CheckpointError) as err:
            export_model(_lab(toy), Path("unused"), verify=False)
        message = str(err.value)
        assert "\n" not in message and "no exact stock rewrite of toy" in message
        assert "vshared" in message.split("exportable:")[1]
    finally:
        unregister_variant("toy")


def test_the_torch_free_exportable_list_is_the_exporters() -> None:
    """`variants` reads exportable.py (no torch, no exporter); twin.py holds the rewrites."""
    import subprocess
    import sys

    from qvka_core.export import exportable, twin

    assert set(twin._REWRITES) == set(exportable.REWRITTEN)
    assert not set(exportable.STOCK_KINDS) & set(exportable.REWRITTEN)
    code = ("import sys, qvka_core.export, qvka_core.export.exportable\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "False"


def test_cli_exports_a_vshared_checkpoint(tmp_path: Path, capsys) -> None:
    lab = _lab(CASES["neox-two-v"][0])
    src = save_checkpoint(tmp_path / "src", lab.model)
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GPTNeoXForCausalLM" in printed and "shared V heads repeated" in printed
    assert load_checkpoint(str(out)).config == lab.config


def test_the_bundled_austen_vshared_exports_as_gpt_neox_and_back(tmp_path: Path) -> None:
    loaded = load_checkpoint("austen-vshared")
    result = export_model(loaded, tmp_path / "austen-vshared")
    assert result.stock_class == "GPTNeoXForCausalLM"
    assert result.fidelity.max_abs_logit_diff <= TOL and result.fidelity.same_greedy
    assert result.fidelity.max_abs_attention_diff <= TOL
    a = loaded.config.attention  # K n_heads·D + V n_v_heads·D a layer, bf16; stock V: n_heads·D
    lab_bytes = loaded.config.n_layers * (a.n_heads + a.option("n_v_heads")) * a.head_dim * 2
    stock_bytes = loaded.config.n_layers * 2 * a.n_heads * a.head_dim * 2
    assert stock_bytes > lab_bytes
    card = (tmp_path / "austen-vshared" / "README.md").read_text()
    assert f"{stock_bytes:,} B per token for this export against {lab_bytes:,} B" in card
    back = load_checkpoint(str(tmp_path / "austen-vshared"))
    assert back.config == loaded.config
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[key], value), key


def test_gqa_for_gpt2_takes_kv_back_the_same_way_and_old_exports_still_load(
        tmp_path: Path) -> None:
    """GQA's K/V repeated for GPT-2 (no grouping) are recorded as repeated rows too, so no
    second copy is stored; an export written before that (K/V in the sidecar tensors, no
    "repeated") still loads back bit for bit."""
    base = _vshared("gpt2", 2)
    cfg = base.replace(attention=base.attention.replace(kind="gqa", n_kv_heads=2, options=()))
    lab = _lab(cfg, seed=9)
    out = tmp_path / "out"
    export_model(lab, out, verify=False)
    sidecar = json.loads((out / "qvka_lab.json").read_text())
    assert sidecar["repeated"]["layers.0.attn.k_proj.weight"] == 2
    assert not (out / "qvka_lab.safetensors").exists()
    want = lab.model.state_dict()
    del sidecar["repeated"]  # the older layout
    (out / "qvka_lab.json").write_text(json.dumps(sidecar))
    old = {k: v.detach().clone() for k, v in want.items() if ".k_proj." in k or ".v_proj." in k}
    save_file(old, str(out / "qvka_lab.safetensors"), metadata={"format": "pt"})
    back = load_checkpoint(str(out))
    assert back.config == cfg
    for key, value in want.items():
        assert torch.equal(back.model.state_dict()[key], value), key
