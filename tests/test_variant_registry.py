"""A variant is one module with its spec: a toy registered at runtime reaches every list and
flag the registry drives, and `convert` refuses it in one line because it has no converter."""

from __future__ import annotations

import dataclasses
import json

import pytest

from qvka_app import costs_view
from qvka_core.analysis import explorer
from qvka_core.cli import main
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.convert import convert
from qvka_core.errors import ConfigError
from qvka_core.model import Transformer
from qvka_core.presets import get_preset
from qvka_core.variants import (
    VariantOption,
    available_variants,
    convertible_variants,
    get_variant,
    register_variant,
    unregister_variant,
    variant_options,
)

SHAPE = ["--d-model", "64", "--n-layers", "2", "--n-heads", "4"]


@pytest.fixture
def toy():
    """MHA's maths under another name, one option of its own and no converter."""
    spec = dataclasses.replace(
        get_variant("mha"), name="toy", description="a toy registered by a test",
        spectrum_rank=65, conversion=None, label="Toy",
        options=(VariantOption("toy_gain", int, "a knob only the toy has", default=3,
                               minimum=1, demo=5),))
    register_variant(spec)
    try:
        yield "toy"
    finally:
        unregister_variant("toy")
    assert "toy" not in available_variants()


def test_toy_is_listed_by_variants_and_costs(toy, capsys) -> None:
    assert toy in available_variants() and toy not in convertible_variants()
    assert main(["variants", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[toy]["conversion"] is None and rows[toy]["options"][0]["name"] == "toy_gain"
    assert main(["costs", *SHAPE, "--json"]) == 0  # default: every registered variant
    assert toy in [r["variant"] for r in json.loads(capsys.readouterr().out)]
    assert list(costs_view.spectrum(get_preset("gpt2"))["variant"]) == available_variants()


def test_toy_option_becomes_a_flag_with_its_rule(toy, capsys) -> None:
    assert "toy_gain" in [o.name for o in variant_options()]
    with pytest.raises(SystemExit):
        main(["costs", "--help"])
    assert "--toy-gain" in capsys.readouterr().out
    assert main(["costs", *SHAPE, "--variant", toy, "--toy-gain", "7", "--json"]) == 0
    assert main(["costs", *SHAPE, "--variant", "mha", "--toy-gain", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: toy_gain must be at least 1, got 0"]


def test_toy_option_lives_in_the_config_and_round_trips(toy) -> None:
    a = AttentionConfig(kind=toy, d_model=32, n_heads=4)
    assert a.option("toy_gain") == 3  # the spec's default
    b = a.replace(toy_gain=9)
    assert b.option("toy_gain") == 9 and b.replace(kind="mha").options == ()
    cfg = ModelConfig(attention=b, n_layers=1, vocab_size=16, ffn_dim=8)
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ConfigError, match="toy_gain do not apply to mha"):
        AttentionConfig(kind="mha", d_model=32, n_heads=4, options={"toy_gain": 2})


def test_toy_is_in_the_random_family(toy) -> None:
    assert toy in list(explorer.RANDOM_VARIANTS)
    model = explorer.random_model(toy)
    assert model.config.attention.option("toy_gain") == 5  # its demo value
    assert model.config.variant == toy


def test_convert_to_a_variant_without_converter_is_one_line(toy, tmp_path, capsys) -> None:
    src = Transformer(ModelConfig(attention=AttentionConfig(kind="mha", d_model=32, n_heads=4),
                                  n_layers=1, vocab_size=16, ffn_dim=8))
    with pytest.raises(ConfigError, match=r"^no conversion to toy; variants with a converter: "):
        convert(src, toy)
    assert main(["convert", "--from", "austen-mha", "--to", toy, "--out",
                 str(tmp_path / "o")]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [
        f"error: no conversion to toy; variants with a converter: "
        f"{', '.join(convertible_variants())}"]
    assert "Traceback" not in out.err and not (tmp_path / "o").exists()


def test_every_builtin_variant_explains_itself_on_home() -> None:
    """Home draws each variant's formula and diagram from its spec: all built-ins have one,
    and the diagram carries what the accounting says is cached (a cached tensor that the
    diagram leaves out would be a wrong picture)."""
    import qvka_app.home

    for name in available_variants():
        ex = get_variant(name).explainer
        assert ex is not None and ex.formula and ex.projects and ex.scores and ex.caches, name
    cached = {"mha": "K", "qv": "V", "mla": "c"}
    for name, first in cached.items():
        assert get_variant(name).explainer.caches[0].startswith(first)
    assert "K" not in "".join(get_variant("qv").explainer.caches)  # QV caches no key
    page = qvka_app.home.diagram_html(get_variant("qv").explainer, present=False)
    assert page.count("vd-chip'") == 4  # Q, V | Q·Vᵀ | V


def test_a_runtime_variant_brings_its_own_tab_to_home(toy) -> None:
    from streamlit.testing.v1 import AppTest

    from qvka_core.variants.registry import Explainer

    spec = dataclasses.replace(get_variant(toy), explainer=Explainer(
        r"\mathrm{Toy} = QK^\top", "a toy <b>explained</b>", ("Q", "K"), "Q·Kᵀ", ("K",)))
    unregister_variant(toy)
    register_variant(spec)

    def script() -> None:
        import qvka_app.home

        qvka_app.home.explain_variants(present=False)

    at = AppTest.from_function(script)
    at.run()
    assert not at.exception
    labels = [t.label for t in at.tabs]
    assert labels == [get_variant(v).label or v.upper() for v in available_variants()]
    assert labels.index("Toy") == available_variants().index(toy)  # its spectrum place
    assert any(r"\mathrm{Toy}" in el.value for el in at.latex)
    assert any("explained" in c.value for c in at.caption)
