"""One model cache for the whole app: a checkpoint two pages use is loaded once and held once."""

from __future__ import annotations


def test_explorer_and_convert_share_one_copy_of_a_model() -> None:
    import qvka_app.models

    qvka_app.models._load.clear()
    qvka_app.families.load_model.clear()
    shown = qvka_app.families.load_model("austen", "qv")  # the Explorer's Austen family
    source = qvka_app.sources.load_source("austen-qv")  # the Convert / Fine-tune source list
    assert source is shown  # the same object: one copy in memory
    assert not source.model.training
    assert not any(p.requires_grad for p in source.model.parameters())
