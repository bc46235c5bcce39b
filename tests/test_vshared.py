"""V-shared (paper §8, a reconstruction): per-head K, V shared in n_v_heads groups.

The generic contracts (eager == SDPA, cached decode == full forward, accounting == built
model, FlopCounterMode) run over the registry in test_attention/test_accounting/test_generate;
these are V-shared's own: hand-worked sizes, its grouping, conversion, storage and training.
"""

from __future__ import annotations

import json

import pytest
import torch

from qvka_core import AttentionConfig, ModelConfig, Transformer
from qvka_core.accounting import costs
from qvka_core.checkpoints.store import load_checkpoint_dir, save_checkpoint
from qvka_core.cli import main
from qvka_core.convert import convert
from qvka_core.errors import CheckpointError, ConfigError


def model(kind: str = "vshared", n_kv_heads: int | None = None, **attn) -> Transformer:
    a = AttentionConfig.make(kind=kind, d_model=64, n_heads=8, n_kv_heads=n_kv_heads, **attn)
    cfg = ModelConfig(attention=a, n_layers=2, vocab_size=50, ffn_dim=96, max_seq_len=64,
                      norm="rmsnorm", mlp="swiglu", activation="silu")
    torch.manual_seed(0)
    m = Transformer(cfg).eval()
    with torch.no_grad():  # attention weights large enough for conversions to matter
        for name, p in m.named_parameters():
            if ".attn." in name:
                p.normal_(0.0, 0.3)
    return m


def logits(m: Transformer) -> torch.Tensor:
    ids = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return m(ids).logits


def test_sizes_by_hand() -> None:
    """d 64, 8 heads of 8, 2 V heads: K 8·8 and V 2·8 elements cached per token per layer."""
    m = model(options={"n_v_heads": 2})
    a = m.cfg.attention
    assert a.n_kv_heads == 8 and a.option("n_v_heads") == 2
    attn = m.layers[0].attn
    assert attn.k_proj.weight.shape == (64, 64) and attn.v_proj.weight.shape == (16, 64)
    assert costs(m.cfg).attention_params == 2 * (3 * 64 * 64 + 16 * 64)  # q, k, o + v, 2 layers
    assert costs(m.cfg, seq_len=10, dtype="fp32").kv_cache_bytes_per_token == 2 * (64 + 16) * 4
    assert attn.kv_groups() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # heads under their shared V


def test_default_is_one_shared_v_and_groups_must_divide() -> None:
    assert model().cfg.attention.option("n_v_heads") == 1
    with pytest.raises(ConfigError, match=r"n_v_heads \(3\) must divide n_heads \(8\)"):
        model(options={"n_v_heads": 3})
    with pytest.raises(ConfigError, match="n_v_heads must be at least 1"):
        model(options={"n_v_heads": 0})


def test_mha_to_vshared_is_exact_when_the_pooled_v_heads_are_equal() -> None:
    src = model("mha")
    with torch.no_grad():  # make V heads 0-3 equal and 4-7 equal (two groups of four)
        for layer in src.layers:
            w = layer.attn.v_proj.weight.view(8, 8, 64)  # (H·D, d) -> (H, D, d)
            w[1:4] = w[0]
            w[5:8] = w[4]
    out = convert(src, "vshared", n_v_heads=2, max_eval_tokens=128)
    torch.testing.assert_close(logits(out.model), logits(src), atol=1e-5, rtol=1e-5)
    rep = out.report
    assert rep.options["n_v_heads"] == 2 and "mean-pool V" in rep.method
    assert abs(rep.loss_after - rep.loss_before) < 1e-4 and rep.js_divergence_mean < 1e-6
    assert rep.kv_cache_bytes_per_token_after < rep.kv_cache_bytes_per_token_before


def test_mha_to_vshared_with_distinct_v_heads_reports_the_drift() -> None:
    src = model("mha")
    out = convert(src, "vshared", max_eval_tokens=128)  # default: one V for all 8 heads
    rep = out.report
    assert rep.options["n_v_heads"] == 1
    assert rep.js_divergence_mean > 1e-3 and rep.loss_after != pytest.approx(rep.loss_before)
    assert rep.hidden_cosine < 0.9999
    # K is kept per head: the converted K projection is the source's
    torch.testing.assert_close(out.model.layers[0].attn.k_proj.weight,
                               src.layers[0].attn.k_proj.weight)


def test_gqa_to_vshared_keeps_the_grouping_for_v_exactly() -> None:
    src = model("gqa", n_kv_heads=2)
    out = convert(src, "vshared", max_eval_tokens=128)  # default: the source's 2 groups
    assert out.config.attention.option("n_v_heads") == 2
    torch.testing.assert_close(logits(out.model), logits(src), atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_and_config_json(tmp_path) -> None:
    m = model(options={"n_v_heads": 4})
    save_checkpoint(tmp_path / "vs", m)
    raw = json.loads((tmp_path / "vs" / "config.json").read_text())
    assert raw["model"]["attention"]["options"] == [["n_v_heads", 4]]
    back = load_checkpoint_dir(tmp_path / "vs")
    assert back.config == m.cfg
    torch.testing.assert_close(logits(back.model), logits(m))


def test_old_flat_config_json_still_loads() -> None:
    """A config.json written before `options` existed (flat variant knobs) loads."""
    from qvka_core.paths import PROJECT_ROOT

    path = PROJECT_ROOT / "assets" / "checkpoints" / "austen-qvka" / "config.json"
    data = json.loads(path.read_text())["model"]
    assert "options" not in data["attention"]
    cfg = ModelConfig.from_dict(data)
    old = data["attention"]
    assert "d_ctx" in old and "kv_lora_rank" in old  # the flat knobs of every variant
    # QV-Ka's own knobs move into `options`; the other variants' fillers are dropped.
    assert dict(cfg.attention.options) == {"d_ctx": old["d_ctx"],
                                           "qvka_cache": old["qvka_cache"]}


def test_train_builds_vshared_from_scratch() -> None:
    from qvka_core.train import TrainArgs
    from qvka_core.train.setup import model_config

    cfg = model_config(TrainArgs(preset="austen", variant="vshared"), 4096)
    assert cfg.variant == "vshared" and cfg.attention.option("n_v_heads") == 1
    assert Transformer(cfg).layers[0].attn.v_proj.weight.shape == (32, 128)  # 1 V head of 32


def test_export_takes_vshared_in_a_llama_layout_and_refuses_agf(tmp_path) -> None:
    """Export itself: tests/test_export_vshared.py; here only that the gate lets it through."""
    from qvka_core.export.twin import pick_family

    assert pick_family(model().cfg) == "llama"
    with pytest.raises(CheckpointError, match="AGF"):
        pick_family(model(position="agf").cfg)


def test_cli_convert_refuses_a_bad_group_count_before_loading(tmp_path, capsys) -> None:
    assert main(["convert", "--from", "austen-mha", "--to", "vshared", "--n-v-heads", "0",
                 "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --n-v-heads: n_v_heads must be at least 1, got 0"]
    assert main(["convert", "--from", "austen-mha", "--to", "gqa", "--n-v-heads", "2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "n_v_heads does not apply to --to gqa (it applies to: vshared)" in \
        capsys.readouterr().err


def test_vshared_is_a_source_exactly_mha_from_it() -> None:
    """Its dense form replicates V per head: converting to MHA (or back) loses nothing."""
    src = model(options={"n_v_heads": 2})
    mha = convert(src, "mha", max_eval_tokens=128)
    torch.testing.assert_close(logits(mha.model), logits(src), atol=1e-5, rtol=1e-5)
    back = convert(mha.model, "vshared", n_v_heads=2, max_eval_tokens=128)
    torch.testing.assert_close(logits(back.model), logits(src), atol=1e-5, rtol=1e-5)
