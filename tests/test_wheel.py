"""The package installs: `pip wheel` builds offline (no build isolation: setuptools and wheel
come from the venv), and the installed `qvka` command runs from outside the checkout in a
fresh venv, finding the bundled assets inside the package; `qvka app` serves the shipped app.

The fresh venv has no packages of its own; a .pth line lends it the shared venv's
site-packages (torch and the rest are not downloaded). Nothing of the checkout is on its
path: the wheel is built from a copy, and the command runs in an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ASSETS = ("checkpoints", "corpus", "tokenizer", "paper_mini")
GPT2_PARAMS = 124_439_808  # HF openai-community/gpt2, GPT2Config defaults


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("qvka_core", "qvka_app", "pages", ".streamlit"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in RUNTIME_ASSETS:
        shutil.copytree(ROOT / "assets" / name, src / "assets" / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", ".", "-w", str(out)], cwd=src, check=True,
                   capture_output=True, text=True)
    (built,) = out.glob("qvka_lab-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_the_runtime_assets(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for package in ("qvka_core", "qvka_app")
               for p in (ROOT / package).rglob("*.py")}
    assert modules - names == set()  # a new subpackage missing from pyproject's list fails here
    pages = {f"qvka_app/pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}
    assert len(pages) >= 6 and pages - names == set()  # beside the main script qvka_app/app.py
    assert "qvka_app/_streamlit/config.toml" in names
    for name in RUNTIME_ASSETS:
        shipped = {p.relative_to(ROOT / "assets").as_posix()
                   for p in (ROOT / "assets" / name).rglob("*") if p.is_file()}
        assert {f"qvka_core/_assets/{s}" for s in shipped} - names == set(), name
    assert not any(n.startswith(("pages/", "tests/", "benchmarks/", "app.py",
                                 "qvka_core/_assets/screenshots"))
                   for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "qvka = qvka_core.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def _fresh_venv(wheel: Path, tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """(a new venv with the wheel installed, an environment without the checkout, an empty
    working folder that is also HOME)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
                   ["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "shared-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QVKA_RUNS")}
    env["HOME"] = str(away)
    env.pop("XDG_DATA_HOME", None)
    return venv, env, away


@pytest.mark.slow
def test_qvka_costs_runs_from_the_installed_wheel_in_a_fresh_venv(wheel: Path,
                                                                   tmp_path: Path) -> None:
    venv, env, away = _fresh_venv(wheel, tmp_path)
    python = venv / "bin" / "python"
    out = subprocess.run([str(venv / "bin" / "qvka"), "costs", "--preset", "gpt2", "--json"],
                         cwd=away, env=env, check=True, capture_output=True, text=True).stdout
    rows = {r["variant"]: r for r in json.loads(out)}
    assert rows["mha"]["params_total"] == GPT2_PARAMS
    where = subprocess.run(
        [str(python), "-c", "import qvka_core.data as d, qvka_core.paths as p; "
         "print(d.__file__); print(d.CORPUS_PATH.is_file()); print(p.runs_root())"],
        cwd=away, env=env, check=True, capture_output=True, text=True).stdout.split("\n")
    assert Path(where[0]).is_relative_to(venv)  # the installed copy, not the checkout
    assert where[1] == "True"  # the bundled corpus, shipped inside the package
    assert Path(where[2]) == away / ".local" / "share" / "qvka-lab" / "runs"  # not site-packages
    page = subprocess.run([str(python), "-c", APP_TEST], cwd=away, env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    home, costs, exceptions, app_file = json.loads(page)
    assert Path(app_file).is_relative_to(venv)  # the shipped router, not the checkout's
    assert "QV-Ka Lab" in home and exceptions == []
    assert costs > 0  # the shipped Costs page drew its charts


APP_TEST = """
import json, qvka_app.app as app
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(app.__file__, default_timeout=120).run()
home = [t.value for t in at.title]
at.switch_page("pages/costs.py").run()
print(json.dumps([home, len(at.get("plotly_chart")), [e.message for e in at.exception],
                  app.__file__]))
"""


@pytest.mark.slow
def test_qvka_app_serves_the_installed_app(wheel: Path, tmp_path: Path) -> None:
    """`qvka app` from the installed wheel, outside any checkout: the server starts with the
    shipped settings (headless, local address) and serves its pages."""
    import socket
    import time
    import urllib.request

    venv, env, away = _fresh_venv(wheel, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(venv / "bin" / "qvka"), "app", "--server.port", str(port)],
                              cwd=away, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        health = ""
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    health = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert health == "ok", server.stdout.read() if server.poll() is not None else health
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/costs") as r:
            assert r.status == 200 and "<title>Streamlit</title>" in r.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
