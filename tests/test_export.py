"""Export to stock Hugging Face classes (issue 14): every family × variant with a stock twin is
exported from a tiny random lab model, loaded with stock transformers (no remote code) and
compared with the lab model (logits or hidden states, and every layer's attention
probabilities, fp32, eager); the export loads back into the lab as the source model; HF ->
lab -> HF gives back the HF tensors; refusals are one line (CLI exit 2)."""

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


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (norms near 1, biases non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(1.0 + noise if "norm" in name else noise)


def _llama(kind: str, *, n_kv: int = 6, tie: bool = False, **attn) -> ModelConfig:
    a = AttentionConfig.make(kind=kind, d_model=48, n_heads=6, n_kv_heads=n_kv, position="rope",
                        rope_theta=5000.0, **attn)
    return ModelConfig(attention=a, n_layers=2, vocab_size=97, ffn_dim=64, max_seq_len=64,
                       norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", activation="silu",
                       tie_embeddings=tie, name=f"tiny-{kind}")


def _gpt2(kind: str, *, n_kv: int = 4, **attn) -> ModelConfig:
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, n_kv_heads=n_kv, position="learned",
                        qkv_bias=True, o_bias=True, **attn)
    return ModelConfig(attention=a, n_layers=2, vocab_size=97, ffn_dim=64, max_seq_len=40,
                       norm="layernorm", mlp="gelu", activation="gelu_tanh", mlp_bias=True,
                       name=f"tiny-gpt2-{kind}")


def _bert(kind: str, **attn) -> ModelConfig:
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, causal=False, position="learned",
                        qkv_bias=True, o_bias=True, **attn)
    return ModelConfig(attention=a, n_layers=2, vocab_size=97, ffn_dim=64, max_seq_len=40,
                       norm="layernorm", norm_eps=1e-12, prenorm=False, mlp="gelu",
                       activation="gelu", mlp_bias=True, tie_embeddings=False, lm_head=False,
                       type_vocab_size=2, embed_norm=True, pooler=True, final_norm=False,
                       name=f"tiny-bert-{kind}")


def _austen(kind: str, *, n_kv: int = 4, position: str = "rope", **attn) -> ModelConfig:
    """The bundled Austen layout: pre-norm LayerNorm, RoPE, GELU MLP, no biases, tied."""
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, n_kv_heads=n_kv, position=position,
                        **attn)
    return ModelConfig(attention=a, n_layers=2, vocab_size=97, ffn_dim=64, max_seq_len=40,
                       norm="layernorm", mlp="gelu", activation="gelu", name=f"tiny-{kind}")


CASES = {
    "llama-mha": _llama("mha"),
    "llama-gqa": _llama("gqa", n_kv=2),
    "llama-mqa-tied": _llama("mqa", tie=True),
    "llama-qv": _llama("qv"),
    "llama-qv-grouped": _llama("qv", n_kv=2),
    "llama-qvka": _llama("qvka", d_ctx=5),
    "llama-qvka-grouped-vg": _llama("qvka", n_kv=3, d_ctx=12, qvka_cache="vg"),
    "llama-qvka-bias": _llama("qvka", n_kv=2, d_ctx=8, qkv_bias=True, o_bias=True),
    "qwen2-gqa": _llama("gqa", n_kv=2, qkv_bias=True),
    "qwen2-qvka": _llama("qvka", n_kv=2, d_ctx=6, qkv_bias=True),
    "deepseek-mla": _llama("mla", kv_lora_rank=16, qk_rope_head_dim=4),
    "deepseek-mla-eps": _llama("mla", kv_lora_rank=8, q_lora_rank=12, latent_norm_eps=3.0),
    "deepseek-mla-qlora-bias": _llama("mla", kv_lora_rank=12, q_lora_rank=20,
                                      qk_rope_head_dim=6, v_head_dim=10, qkv_bias=True),
    "gpt2-mha": _gpt2("mha"),
    "gpt2-gqa": _gpt2("gqa", n_kv=2),
    "gpt2-qv": _gpt2("qv"),
    "gpt2-qvka": _gpt2("qvka", d_ctx=4),
    "gpt2-untied": _gpt2("mha").replace(tie_embeddings=False),
    "bert-mha": _bert("mha"),
    "bert-qv": _bert("qv"),
    "bert-qvka": _bert("qvka", d_ctx=6),
    "neox-mha": _austen("mha"),
    "neox-mqa": _austen("mqa"),
    "neox-qv": _austen("qv", n_kv=2),
    "neox-qvka": _austen("qvka", d_ctx=8),
    "neox-untied-bias": _austen("gqa", n_kv=2, qkv_bias=True).replace(tie_embeddings=False),
}
STOCK = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
         "deepseek": "DeepseekV2ForCausalLM", "gpt2": "GPT2LMHeadModel", "bert": "BertModel",
         "neox": "GPTNeoXForCausalLM"}


def _lab(cfg: ModelConfig, seed: int = 0) -> LoadedModel:
    model = Transformer(cfg).eval()
    _randomize(model, seed)
    return LoadedModel(model=model, tokenizer=None, config=cfg, name=cfg.name)


def _stock(directory: Path, encoder: bool):
    cls = transformers.AutoModel if encoder else transformers.AutoModelForCausalLM
    return cls.from_pretrained(str(directory), attn_implementation="eager",
                               dtype=torch.float32).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_stock_transformers_reproduces_logits_and_attention(case: str, tmp_path: Path) -> None:
    cfg = CASES[case]
    lab = _lab(cfg)
    out = tmp_path / case
    export_model(lab, out, verify=False)
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        STOCK[case.split("-")[0]]]
    encoder = not cfg.causal
    stock = _stock(out, encoder)
    assert type(stock).__name__ == STOCK[case.split("-")[0]]
    ids = torch.tensor([[5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71, 2]])  # (1, T)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        mine = lab.model(ids, impl="eager", return_attentions=True)
        theirs = stock(input_ids=ids, attention_mask=mask, output_attentions=True)
    if encoder:
        torch.testing.assert_close(theirs.last_hidden_state, mine.hidden_states, atol=TOL, rtol=0)
    else:
        torch.testing.assert_close(theirs.logits, mine.logits, atol=TOL, rtol=0)
    assert len(theirs.attentions) == cfg.n_layers
    for a, b in zip(theirs.attentions, mine.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_loads_back_into_the_lab_as_the_source(case: str, tmp_path: Path) -> None:
    cfg = CASES[case]
    lab = _lab(cfg, seed=3)
    export_model(lab, tmp_path / "out", verify=False)
    back = load_checkpoint(str(tmp_path / "out"))
    assert back.config == cfg
    want = lab.model.state_dict()
    got = back.model.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_cached_greedy_decoding_matches_the_stock_twin(tmp_path: Path) -> None:
    """The stock class decodes with its own KV cache; the lab QV-Ka with its V+G cache."""
    lab = _lab(_llama("qvka", n_kv=2, d_ctx=8, qvka_cache="vg"), seed=5)
    export_model(lab, tmp_path / "out", verify=False)
    stock = _stock(tmp_path / "out", encoder=False)
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    theirs = stock.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True,
                            pad_token_id=0)
    mine = lab.model.generate(prompt, 12)
    assert torch.equal(theirs, mine)


def test_qvka_export_folds_the_key_as_the_issue_states(tmp_path: Path) -> None:
    """k_proj of head i is W_ctx·A_i + W_V,i·B_i, computed here with explicit matrices."""
    cfg = _llama("qvka", n_kv=2, d_ctx=4)
    lab = _lab(cfg, seed=7)
    export_model(lab, tmp_path / "out", verify=False)
    hf = load_file(str(tmp_path / "out" / "model.safetensors"))
    attn = lab.model.layers[1].attn
    d = cfg.attention.head_dim
    for i in range(2):
        w_kh = attn.k_weight[i]  # (d_ctx + D, D) = [A_i ; B_i]
        a_i, b_i = w_kh[:4], w_kh[4:]
        w_ctx = attn.ctx_proj.weight.T  # (d_model, d_ctx), x·W_ctx convention
        w_v = attn.v_proj.weight[i * d:(i + 1) * d].T  # (d_model, D)
        expected = (w_ctx @ a_i + w_v @ b_i).T  # Linear weight (D, d_model)
        got = hf["model.layers.1.self_attn.k_proj.weight"][i * d:(i + 1) * d]
        torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=0)
    assert torch.equal(hf["model.layers.1.self_attn.v_proj.weight"], attn.v_proj.weight.detach())


def test_an_export_edited_elsewhere_loads_as_its_stock_twin(tmp_path: Path) -> None:
    lab = _lab(_llama("qv", n_kv=2))
    export_model(lab, tmp_path / "out", verify=False)
    path = tmp_path / "out" / "model.safetensors"
    state = load_file(str(path))
    state["model.layers.0.self_attn.k_proj.weight"] += 0.01  # no longer k == v
    save_file(state, str(path), metadata={"format": "pt"})
    back = load_checkpoint(str(tmp_path / "out"))
    assert back.config.variant == "gqa"
    assert "stock twin" in back.meta["restore"]


def _hf_round_trip(model, tmp_path: Path) -> None:
    _randomize(model, 11)
    model.save_pretrained(str(tmp_path / "hf"))
    loaded = load_checkpoint(str(tmp_path / "hf"))
    export_model(loaded, tmp_path / "again", verify=False)
    before = load_file(str(tmp_path / "hf" / "model.safetensors"))
    after = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert set(after) <= set(before)
    for key, value in after.items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("family", ["gpt2", "llama", "deepseek_v2", "gpt_neox"])
def test_hf_to_lab_to_hf_gives_back_the_same_tensors(family: str, tmp_path: Path) -> None:
    """load ∘ export is the identity seen from HF: fused c_attn, Conv1D transposes, NeoX's
    per-head fusion and DeepSeek's interleaved RoPE rows all invert exactly."""
    if family == "gpt2":
        c = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2,
                                    n_head=4)
        model = transformers.GPT2LMHeadModel(c)
    elif family == "llama":
        c = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=6,
                                     num_key_value_heads=2, max_position_embeddings=64)
        model = transformers.LlamaForCausalLM(c)
    elif family == "deepseek_v2":
        c = transformers.DeepseekV2Config(
            vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
            qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, first_k_dense_replace=2,
            max_position_embeddings=64)
        model = transformers.DeepseekV2ForCausalLM(c)
    else:
        c = transformers.GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64,
                                       max_position_embeddings=40, use_parallel_residual=False,
                                       rope_parameters={"rope_type": "default",
                                                        "rope_theta": 10000.0,
                                                        "partial_rotary_factor": 1.0})
        model = transformers.GPTNeoXForCausalLM(c)
    _hf_round_trip(model, tmp_path)


@pytest.mark.parametrize("cfg, words", [
    (_austen("mha", position="agf"), "AGF"),
    (_austen("qv", position="sinusoidal"), "sinusoidal"),
    (_austen("mha", position="alibi"), "ALiBi"),
    (_austen("mla"), "MLA exports only from a Llama layout"),
    (_llama("mla", q_lora_rank=None, o_bias=True), "no q_proj bias"),
])
def test_refusals_are_one_line_naming_what_no_stock_class_has(cfg, words, tmp_path) -> None:
    with pytest.raises(CheckpointError) as err:
        export_model(_lab(cfg), tmp_path / "out", verify=False)
    message = str(err.value)
    assert "\n" not in message and words in message
    assert not (tmp_path / "out").exists()


def test_cli_exports_a_run_end_to_end(tmp_path: Path, capsys) -> None:
    """A QV-Ka checkpoint in our format, by path, with a tokenizer: stock classes load the
    weights and the tokenizer; the card says what the export gives up."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from qvka_core.tokenizer import TextTokenizer

    vocab = {f"w{i}": i for i in range(96)} | {"<|endoftext|>": 96}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    lab = _lab(_austen("qvka", d_ctx=8))
    src = save_checkpoint(tmp_path / "src", lab.model, tokenizer=TextTokenizer(backend),
                          meta={"converted_from": "austen-mha", "method": "qvka"})
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GPTNeoXForCausalLM" in printed and "max |Δlogit|" in printed
    card = (out / "README.md").read_text()
    assert "caches K **and** V" in card and "austen-mha" in card
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ids = tok("w3 w5 w7", return_tensors="pt")["input_ids"]
    assert ids.tolist() == [[3, 5, 7]]
    stock = _stock(out, encoder=False)
    with torch.no_grad():
        torch.testing.assert_close(stock(ids).logits, lab.model(ids).logits, atol=TOL, rtol=0)
    # An existing folder is refused; a refused layout exits 2 with one line.
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(src), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    agf = save_checkpoint(tmp_path / "agf", _lab(_austen("mha", position="agf")).model)
    assert main(["export", "--checkpoint", str(agf), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "AGF" in err


@pytest.mark.parametrize("name", ["austen-mha", "austen-qvka", "austen-qv-agf"])
def test_bundled_austen_models_export_or_refuse(name: str, tmp_path: Path) -> None:
    loaded = load_checkpoint(name)
    if loaded.config.position == "agf":
        with pytest.raises(CheckpointError, match="AGF"):
            export_model(loaded, tmp_path / name, verify=False)
        return
    result = export_model(loaded, tmp_path / name)
    assert result.stock_class == "GPTNeoXForCausalLM"
    # fp32 over trained logits up to |15|: ours and the twin each differ from a float64 run
    # by ~9e-6 (austen-qvka), so their difference may reach twice that (a wrong weight: far more)
    assert result.fidelity.max_abs_logit_diff <= 2 * TOL
    assert result.fidelity.max_abs_attention_diff <= TOL


@pytest.mark.slow
def test_convert_heal_export_then_stock_llama_scores_the_labs_validation_loss(
        tmp_path: Path, monkeypatch) -> None:
    """The README's SmolLM2 -> QV-Ka -> export figure, on a tiny Llama-layout model: the same
    script (convert, a distilled healing run, export) and the same validation windows."""
    import importlib.util

    from qvka_core.data import load_tokenizer

    monkeypatch.setenv("QVKA_RUNS", str(tmp_path / "runs"))
    cfg = _llama("gqa", n_kv=2).replace(vocab_size=4096, max_seq_len=64)
    src = save_checkpoint(tmp_path / "tiny-llama", _lab(cfg).model, tokenizer=load_tokenizer())
    script = Path(__file__).resolve().parents[1] / "scripts" / "export_heal_loss.py"
    spec = importlib.util.spec_from_file_location("export_heal_loss", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.heal_and_export(str(src), tmp_path / "work", steps=2, d_ctx=8, seq_len=32,
                               batch=2, eval_batches=2)
    assert r["stock_class"] == "LlamaForCausalLM"
    assert abs(r["lab_val_loss"] - r["run_val_loss"]) < 1e-4  # the run's own windows
    assert abs(r["stock_val_loss"] - r["lab_val_loss"]) < 1e-5
    card = (tmp_path / "work" / "exports" / "heal" / "README.md").read_text()
    assert "trained by run `heal`" in card and "distilled (logits)" in card
    assert "converted from" in card


def test_a_converted_mla_exports_to_deepseek_v2_with_either_latent_norm(tmp_path: Path) -> None:
    """The Convert page's MLA (MHA2MLA) from a Llama layout, latent RMSNorm kept (`rms`) or
    folded away (eps 2^26, rescaled to DeepseekV2's 1e-6): stock DeepseekV2 computes both."""
    from qvka_core.convert import convert

    source = _lab(_llama("gqa", n_kv=2))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]])
    for norm in ("rms", "fold"):
        mla = convert(source, "mla", kv_lora_rank=16, latent_norm=norm).to_loaded(source)
        assert (mla.config.attention.option("latent_norm_eps") == 1e-6) == (norm == "rms")
        export_model(mla, tmp_path / norm, verify=False)
        stock = _stock(tmp_path / norm, encoder=False)
        with torch.no_grad():
            mine = mla.model(ids, impl="eager", return_attentions=True)
            theirs = stock(ids, output_attentions=True)
        torch.testing.assert_close(theirs.logits, mine.logits, atol=TOL, rtol=0)
        for a, b in zip(theirs.attentions, mine.attentions, strict=True):
            torch.testing.assert_close(a, b, atol=TOL, rtol=0)
        back = load_checkpoint(str(tmp_path / norm))
        assert back.config == mla.config
