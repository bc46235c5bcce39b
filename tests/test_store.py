"""Our checkpoint format: round trip, atomic writes, and every bad input named clearly."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from qvka_core import AttentionConfig, ModelConfig, Transformer
from qvka_core.checkpoints.store import load_checkpoint_dir, save_checkpoint
from qvka_core.errors import CheckpointError


def tiny_model(kind: str = "qvka", **kw) -> Transformer:
    a = AttentionConfig.make(kind=kind, d_model=32, n_heads=4, position="agf", **kw)
    return Transformer(ModelConfig(attention=a, n_layers=2, vocab_size=50, ffn_dim=64)).eval()


def snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("kind", ["mha", "mla", "qv", "qvka"])
def test_round_trip_is_exact_and_tied_head_stored_once(tmp_path, kind):
    model = tiny_model(kind)
    save_checkpoint(tmp_path / "ck", model, meta={"note": "x"})
    loaded = load_checkpoint_dir(tmp_path / "ck")
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert loaded.config == model.cfg and loaded.meta == {"note": "x"}
    assert loaded.model.lm_head.weight is loaded.model.tok_emb.weight  # still tied


def test_existing_directory_is_refused_and_left_intact(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_model())
    before = snapshot(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tmp_path / "ck", tiny_model("mha"))
    assert snapshot(tmp_path / "ck") == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp directory left behind


def test_failed_write_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    import qvka_core.checkpoints.store as store

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", tiny_model())
    assert list(tmp_path.iterdir()) == []


def test_pickle_only_directory_is_refused_without_unpickling(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()

    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Bomb()))
    save_checkpoint(tmp_path / "good", tiny_model())
    (d / "config.json").write_bytes((tmp_path / "good" / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint_dir(d)


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_model())
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint_dir(tmp_path / "ck")


def test_config_that_does_not_match_weights_names_tensors(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_model("qvka", d_ctx=8))
    cfg_path = tmp_path / "ck" / "config.json"
    data = json.loads(cfg_path.read_text())
    data["model"]["attention"]["options"] = {**dict(data["model"]["attention"]["options"]),
                                             "d_ctx": 16}
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"ctx_proj\.weight \(8, 32\) != \(16, 32\)"):
        load_checkpoint_dir(tmp_path / "ck")
    data["model"]["attention"].update(kind="mha", options={})
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"missing tensors: .*k_proj.weight"):
        load_checkpoint_dir(tmp_path / "ck")


def test_extra_tensor_and_bad_config_are_named(tmp_path):
    model = tiny_model("mha")
    save_checkpoint(tmp_path / "ck", model)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["layers.0.attn.secret"] = torch.zeros(2)
    save_file(state, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: layers\.0\.attn\.secret"):
        load_checkpoint_dir(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint_dir(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"format": "qvka-lab/1", "model": {
        "attention": {"kind": "mha", "d_model": 32, "n_heads": 5}, "n_layers": 1,
        "vocab_size": 50, "ffn_dim": 8}}))
    with pytest.raises(CheckpointError, match=r"d_model \(32\) must be divisible by n_heads \(5\)"):
        load_checkpoint_dir(tmp_path / "ck")
