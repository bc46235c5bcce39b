"""Converted models are computed once per machine, then read back from the disk cache."""

from __future__ import annotations

import pytest
import torch

import qvka_core.convert.api as convert_api
from qvka_core.convert import convert_cached


def test_second_request_is_served_from_disk_with_identical_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    first = convert_cached("austen-mha", "qv")
    entries = list((tmp_path / "converted").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.safetensors").exists()
    assert first.meta["conversion"]["target_variant"] == "qv"

    def no_conversion(*a, **k):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(convert_api, "convert", no_conversion)
    second = convert_cached("austen-mha", "qv")
    assert second.config == first.config and second.config.variant == "qv"
    ids = torch.tensor([second.tokenizer.encode("It is a truth universally acknowledged").ids])
    torch.testing.assert_close(second.model(ids).logits, first.model(ids).logits)
    assert second.meta["conversion"] == first.meta["conversion"]


def test_options_are_part_of_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    a = convert_cached("austen-mha", "gqa", n_kv_heads=2)
    b = convert_cached("austen-mha", "gqa", n_kv_heads=1)
    assert (a.config.attention.n_kv_heads, b.config.attention.n_kv_heads) == (2, 1)
    assert len(list((tmp_path / "converted").iterdir())) == 2


def test_unknown_source_is_a_clear_error(tmp_path, monkeypatch):
    from qvka_core.errors import CheckpointError

    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="unknown checkpoint 'nope'"):
        convert_cached("nope", "qv")
