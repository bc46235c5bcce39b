"""AppTest for the Export buttons of the Convert and Fine-tune pages: a saved conversion and a
finished run are written to runs/exports/<name> as stock Hugging Face folders that
transformers loads, with the folder path and a zip download offered on the page."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from qvka_core.cli import main
from tests.test_pages_train import no_errors, open_page, runs  # noqa: F401 (fixture)

transformers = pytest.importorskip("transformers")


def test_convert_page_exports_the_saved_conversion(runs: Path) -> None:  # noqa: F811
    at = open_page("pages/convert.py")
    at.selectbox(key="cv_source").set_value("austen-mha")
    at.selectbox(key="cv_to").set_value("qvka")
    at.button(key="cv_run").click().run()
    no_errors(at)
    assert at.button(key="cv_export").disabled  # nothing saved yet
    at.text_input(key="cv_name").set_value("austen-qvka-mine").run()
    at.button(key="cv_save").click().run()
    at.button(key="cv_export").click().run()
    no_errors(at)
    out = runs / "exports" / "austen-qvka-mine"
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "GPTNeoXForCausalLM"]
    assert any(str(out) in s.value and "GPTNeoXForCausalLM" in s.value for s in at.success)
    assert any("max |Δlogit|" in c.value for c in at.caption)
    assert "converted from `austen-mha`" in (out / "README.md").read_text()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.model_type == "gpt_neox"


def test_finetune_page_exports_a_finished_run(runs: Path) -> None:  # noqa: F811
    assert main(["train", "--variant", "qv", "--steps", "2", "--batch", "2", "--seq-len", "16",
                 "--eval-batches", "1", "--eval-every", "2", "--device", "cpu", "--out",
                 str(runs), "--name", "tiny-qv", "--quiet"]) == 0
    at = open_page("pages/finetune.py")
    at.selectbox(key="ft_manage").set_value("tiny-qv").run()
    at.button(key="ft_export").click().run()
    no_errors(at)
    out = runs / "exports" / "tiny-qv"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    zipped = at.get("download_button")
    assert zipped, "a small export is offered as a zip"
    assert "trained by run `tiny-qv` to step 2" in (out / "README.md").read_text()
    # The offered bytes are the folder itself.
    from qvka_app.hf_export import _zip_folder

    names = zipfile.ZipFile(io.BytesIO(_zip_folder(out))).namelist()
    assert "tiny-qv/config.json" in names and "tiny-qv/model.safetensors" in names


def test_convert_page_exports_a_vshared_conversion(runs: Path) -> None:  # noqa: F811
    """MHA -> V-shared on the Convert page, saved, exported: a stock NeoX folder whose card
    says the export caches more than the lab model, and which loads back as V-shared."""
    from qvka_core.checkpoints import load_checkpoint

    at = open_page("pages/convert.py")
    at.selectbox(key="cv_source").set_value("austen-mha")
    at.selectbox(key="cv_to").set_value("vshared")
    at.button(key="cv_run").click().run()
    no_errors(at)
    at.text_input(key="cv_name").set_value("austen-vshared-mine").run()
    at.button(key="cv_save").click().run()
    at.button(key="cv_export").click().run()
    no_errors(at)
    out = runs / "exports" / "austen-vshared-mine"
    assert any(str(out) in s.value and "GPTNeoXForCausalLM" in s.value for s in at.success)
    card = (out / "README.md").read_text()
    assert "KV cache is **larger** than the lab's" in card
    assert load_checkpoint(str(out)).config.variant == "vshared"
