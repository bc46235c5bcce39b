"""Converted models are computed once per machine, then read back from the disk cache."""

from __future__ import annotations

import pytest
import torch

import qvka_core.convert.api as convert_api
from qvka_core.convert import cache, convert_cached


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


def test_a_named_source_whose_weights_were_rewritten_is_converted_again(tmp_path,
                                                                          monkeypatch):
    """A retrained run (or a rebuilt bundled model) under the same name is a new key: the
    cache must not serve the old weights' conversion (a reviewer saw stale figures)."""
    import os
    import shutil

    from qvka_core.paths import ASSETS

    runs = tmp_path / "runs"
    shutil.copytree(ASSETS / "checkpoints" / "austen-mha", runs / "mine" / "checkpoint")
    monkeypatch.setenv("QVKA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("QVKA_RUNS", str(runs))
    before = cache.cache_key("mine", "qv", {})
    assert cache.cache_key("mine", "qv", {}) == before  # stable while the weights stay
    weights = runs / "mine" / "checkpoint" / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten in place
    assert cache.cache_key("mine", "qv", {}) != before
    assert cache.cache_key("austen-mha", "qv", {}) != cache.cache_key("mine", "qv", {})


def test_unknown_source_is_a_clear_error(tmp_path, monkeypatch):
    from qvka_core.errors import CheckpointError

    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="unknown checkpoint 'nope'"):
        convert_cached("nope", "qv")


def count_conversions(monkeypatch) -> list:
    calls: list = []
    real = convert_api.convert

    def counting(*a, **k):
        calls.append(a[1] if len(a) > 1 else k.get("to"))
        return real(*a, **k)

    monkeypatch.setattr(convert_api, "convert", counting)
    return calls


def test_cli_page_and_explorer_share_one_cache_entry(tmp_path, monkeypatch, capsys):
    """convert via the CLI, then the Convert page and the Explorer load it: one conversion."""
    import qvka_app.families
    import qvka_app.sources
    from qvka_core.cli import main

    monkeypatch.setenv("QVKA_CACHE", str(tmp_path / "cache"))
    calls = count_conversions(monkeypatch)
    assert main(["convert", "--from", "austen-mha", "--to", "qvka",
                 "--out", str(tmp_path / "a")]) == 0
    assert calls == ["qvka"]
    # the CLI again (explicit default options too): read back, not converted
    assert main(["convert", "--from", "austen-mha", "--to", "qvka", "--latent-norm", "fold",
                 "--out", str(tmp_path / "b")]) == 0
    assert "read from the conversion cache" in capsys.readouterr().out
    # the Convert page with its default options
    qvka_app.sources._conversions().clear()
    page = qvka_app.sources.conversion("austen-mha", "qvka", (), None)
    assert page.report.target_variant == "qvka" and page.report.eval_tokens >= 4096
    # the Explorer, its base family pointed at the same source
    monkeypatch.setitem(qvka_app.families._BASES, "minilm", "austen-mha")
    monkeypatch.setattr(qvka_app.families, "_CONVERTED", set())
    assert not qvka_app.families._needs_conversion("minilm", "qvka")
    loaded = qvka_app.families.load_model.__wrapped__("minilm", "qvka")
    assert loaded.config.variant == "qvka"
    assert calls == ["qvka"]  # one conversion for all four
    ids = torch.tensor([loaded.tokenizer.encode("It is a truth universally").ids])
    torch.testing.assert_close(loaded.model(ids).logits, page.model(ids).logits)
    # a different calibration text is a different entry
    qvka_app.sources.conversion("austen-mha", "qvka", (), "Emma Woodhouse, handsome, clever. " * 20)
    assert calls == ["qvka", "qvka"]


def test_warm_converts_every_offered_variant_once(tmp_path, monkeypatch, capsys):
    from qvka_core.cli import main
    from qvka_core.convert import warm

    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    monkeypatch.setattr(warm, "FAMILY_BASES", {"austen": "austen-mha"})
    monkeypatch.setattr(warm, "BASE_VARIANT", {"austen-mha": "mha"})
    calls = count_conversions(monkeypatch)
    assert main(["warm"]) == 0
    out = capsys.readouterr().out
    from qvka_core.variants import convertible_variants

    expected = [v for v in convertible_variants() if v != "mha"]  # the base is not converted
    assert {"gqa", "mqa", "mla", "qv", "qvka"} <= set(expected)
    assert sorted(calls) == sorted(expected)
    assert f"0 of {len(expected)} conversions cached already" in out
    for v in expected:  # exactly the entries the Explorer asks for
        assert convert_cached.__module__ and cache.is_cached(
            "austen-mha", v, **warm.family_options(4, v))
    assert main(["warm", "--family", "austen"]) == 0
    n = len(expected)
    assert f"{n} of {n} conversions cached already" in capsys.readouterr().out
    assert len(calls) == n  # nothing converted the second time
