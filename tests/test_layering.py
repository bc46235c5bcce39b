"""The import graph points one way (docs/ARCHITECTURE.md): read with `ast` from every module
of qvka_core, function-local imports and `importlib.import_module("literal")` included (only
`if TYPE_CHECKING:` blocks are skipped: they never run), so a cycle cannot hide inside a
function.

Rules: qvka_core never imports streamlit, the app layer (qvka_app, app.py) or pages; nothing
in qvka_core outside cli/ (and `python -m qvka_core`'s __main__) imports qvka_core.cli; and a
module imports only its own layer or lower ones (LAYERS), except the edges listed in
KNOWN_UPWARD, each with its reason. That list may only shrink: an entry that no longer exists
fails too.

Above the core: streamlit is imported only by app.py, pages/ and qvka_app/ (tests and
benchmarks drive the app, so they may); the view-models of qvka_app (VIEW_MODELS) build
tables and figures without it and import no Streamlit glue.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module belongs to the longest prefix listed; it may import its layer and below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("qvka_core.errors", "qvka_core.paths", "qvka_core.limits",
                    "qvka_core.config", "qvka_core.presets", "qvka_core.stats",
                    "qvka_core.machine", "qvka_core.lazy")),
    ("variant specs and accounting", ("qvka_core.variants", "qvka_core.accounting",
                                      "qvka_core.hardware")),
    # A variant's torch half (qvka_core/variants/<name>/attention.py) sits with the modules.
    ("torch modules", ("qvka_core.variants.*.attention", "qvka_core.attention",
                       "qvka_core.norms", "qvka_core.positions",
                       "qvka_core.model", "qvka_core.measure", "qvka_core.tokenizer",
                       "qvka_core.decode", "qvka_core.baselines")),
    ("checkpoint storage", ("qvka_core.checkpoints", "qvka_core.checkpoint_slots",
                            "qvka_core.data")),
    ("conversion and export", ("qvka_core.convert", "qvka_core.export")),
    ("runs: train, jobs, paper, analysis", ("qvka_core.train", "qvka_core.jobs",
                                            "qvka_core.paper", "qvka_core.analysis")),
    ("interfaces", ("qvka_core.cli", "qvka_core.__main__")),
]
# The package __init__ only re-exports on first use (PEP 562); it sits above everything.
PACKAGE_INIT = "qvka_core"

# (importer, imported): upward edges that exist today, with why. Remove an entry with its edge.
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    ("qvka_core.config", "qvka_core.variants.registry"):
        "AttentionConfig validates the variant name; variant options are leaving config for "
        "the registry's specs (issue 12, the variants half)",
    ("qvka_core.presets", "qvka_core.variants.registry"):
        "recost defaults per variant; moving to the variant specs (issue 12)",
    ("qvka_core.limits", "qvka_core.accounting"):
        "limits.training_parts sizes a run's memory from the parameter count",
    ("qvka_core.checkpoints.resolve", "qvka_core.convert"):
        "load_checkpoint(name, variant=...) converts on load",
    ("qvka_core.checkpoints.hf", "qvka_core.export.restore"):
        "a folder exported to HF format loads back into our variant",
    ("qvka_core.train.engine", "qvka_core.jobs.estimate"):
        "the trainer refuses a run past the device's memory with the jobs estimate",
}

# The lowest layers (foundation; variant specs and accounting) never import torch, so that
# costing, config validation and every --help stay light. Exceptions, with why:
TORCH_FREE_LAYERS = 2
TORCH_ALLOWED: dict[str, str] = {
    "qvka_core.machine": "counts CUDA devices inside a function, only when a caller asks",
}

FORBIDDEN_ANYWHERE = ("streamlit", "qvka_app", "app", "pages")  # the app layer and its UI


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module `source` (module `name`) imports, anywhere in its body; `from X import y`
    counts X.y when that is a module in `known`."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known}
        elif (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))  # importlib.import_module("qvka_core.x")
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: modules it imports} for qvka_core."""
    paths = sorted((root / "qvka_core").rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p.read_text(encoding="utf-8"),
                                             module_name(p, root), p.name == "__init__.py",
                                             known)
            for p in paths}


def _under(module: str, prefix: str) -> bool:
    """`module` is `prefix` or inside it; a "*" in `prefix` matches one dotted name."""
    parts, want = module.split("."), prefix.split(".")
    head = parts[:len(want)]
    return len(head) == len(want) and all(w in ("*", p) for w, p in zip(want, head, strict=True))


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _under(module, prefix):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every broken rule, one line each."""
    out = []
    for importer, imported in sorted(edges.items()):
        for target in sorted(imported):
            top = target.split(".")[0]
            if top in FORBIDDEN_ANYWHERE:
                out.append(f"{importer} imports {target} (qvka_core never imports the app)")
                continue
            if top == "torch":
                low = layer_of(importer)
                if low is not None and low < TORCH_FREE_LAYERS and importer not in TORCH_ALLOWED:
                    out.append(f"{importer} ({LAYERS[low][0]}) imports {target} (no torch "
                               "below the torch modules)")
                continue
            if not target.startswith("qvka_core"):
                continue
            in_cli = importer.startswith("qvka_core.cli") or importer == "qvka_core.__main__"
            if (target == "qvka_core.cli" or target.startswith("qvka_core.cli.")) and not in_cli:
                out.append(f"{importer} imports {target} (only cli/ imports the CLI)")
                continue
            if importer == PACKAGE_INIT or target == PACKAGE_INIT:
                continue
            low, high = layer_of(importer), layer_of(target)
            if low is None or high is None:
                out.append(f"{importer} or {target} is in no layer: add it to LAYERS")
            elif high > low and (importer, target) not in KNOWN_UPWARD:
                out.append(f"{importer} ({LAYERS[low][0]}) imports {target} "
                           f"({LAYERS[high][0]}), a higher layer")
    return out


def test_the_real_tree_keeps_its_layers() -> None:
    assert violations(graph()) == []


def test_every_known_upward_edge_still_exists() -> None:
    edges = graph()
    stale = [edge for edge in KNOWN_UPWARD if edge[1] not in edges.get(edge[0], set())]
    assert stale == [], "remove these from KNOWN_UPWARD: the edges are gone"


SYNTHETIC = {
    "qvka_core.jobs.bad": ("def f():\n    from qvka_core.cli.train import add_arguments\n",
                           "only cli/ imports the CLI"),
    "qvka_core.analysis.bad": ("import os\nif os.environ:\n    import streamlit as st\n",
                               "never imports the app"),
    "qvka_core.jobs.view2": ("def g():\n    from qvka_app import runinfo\n",
                             "never imports the app"),
    "qvka_core.paper2": ("import qvka_app.shared as ui\n", "never imports the app"),
    "qvka_core.config2": ("def h():\n    from qvka_core.train import engine\n",
                          "a higher layer"),
    "qvka_core.paths2": ("import importlib\nm = importlib.import_module('qvka_core.model')\n",
                         "a higher layer"),
    "qvka_core.errors2": ("from .model import Transformer\n", "a higher layer"),
    "qvka_core.variants.toy2": ("def k():\n    from torch import nn\n", "no torch"),
    "qvka_core.accounting2": ("import torch.nn.functional as F\n", "no torch"),
    "qvka_core.variants.other2": (  # a spec importing its own torch half
        "from qvka_core.variants.other.attention import OtherAttention\n", "a higher layer"),
}


@pytest.mark.parametrize("module", sorted(SYNTHETIC))
def test_a_forbidden_import_is_caught_even_inside_a_function(module: str) -> None:
    source, reason = SYNTHETIC[module]
    known = {"qvka_core.train.engine", "qvka_core.model", "qvka_core.cli.train"}
    name = module.rstrip("2")
    edges = {name: imports_of(source, name, False, known)}
    found = violations(edges)
    assert found and all(reason in line for line in found), found


def test_type_checking_imports_and_downward_imports_pass() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from qvka_core.model import Transformer\n"
              "from qvka_core.errors import ConfigError\n")
    edges = {"qvka_core.config": imports_of(source, "qvka_core.config", False, set())}
    assert violations(edges) == []


STREAMLIT_ALLOWED = ("app.py", "pages/", "qvka_app/")
DRIVERS = ("tests/", "benchmarks/")  # run the app through AppTest or a browser
VIEW_MODELS = ("qvka_app.explorer_views", "qvka_app.costs_view", "qvka_app.runinfo",
               "qvka_app.runs_view")


def python_files(root: Path = ROOT) -> list[Path]:
    """Every .py of the project: hidden folders (.venv, .git) and build outputs left out."""
    skip = {"build", "dist", "runs", "test-output", "node_modules"}
    return sorted(p for p in root.rglob("*.py")
                  if not any(part.startswith(".") or part in skip
                             for part in p.relative_to(root).parts[:-1]))


def streamlit_importers(root: Path = ROOT) -> list[str]:
    """Files outside app.py, pages/ and qvka_app/ (and the test/benchmark drivers) that import
    streamlit anywhere in their body (function-local imports included)."""
    out = []
    for path in python_files(root):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(STREAMLIT_ALLOWED + DRIVERS):
            continue
        found = imports_of(path.read_text(encoding="utf-8"), module_name(path, root),
                           path.name == "__init__.py", set())
        if any(name.split(".")[0] == "streamlit" for name in found):
            out.append(rel)
    return out


def view_model_violations(root: Path = ROOT) -> list[str]:
    """A view-model importing streamlit, or a qvka_app module other than a view-model."""
    out = []
    known = {module_name(p, root) for p in (root / "qvka_app").glob("*.py")}
    for name in VIEW_MODELS:
        path = root / (name.replace(".", "/") + ".py")
        for target in sorted(imports_of(path.read_text(encoding="utf-8"), name, False, known)):
            top = target.split(".")[0]
            if top == "streamlit" or (top == "qvka_app" and target != "qvka_app"
                                      and target not in VIEW_MODELS):
                out.append(f"{name} imports {target}")
    return out


def test_only_the_app_layer_and_pages_import_streamlit() -> None:
    assert streamlit_importers() == []
    assert (ROOT / "app.py").is_file() and (ROOT / "qvka_app" / "shared.py").is_file()


def test_view_models_build_without_streamlit() -> None:
    assert view_model_violations() == []


def first_project_import(source: str) -> str | None:
    """The first top-level import of qvka_app or qvka_core in a module, as written."""
    for node in ast.parse(source).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] in ("qvka_app", "qvka_core") for n in names):
            return ast.unparse(node)
    return None


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("*.py")))
def test_every_page_imports_the_page_kit_first(page: str) -> None:
    """qvka_app.shared reroutes a deep link on a fresh server when it is imported; a page that
    imported a torch-loading module first would paint its bare folder-mode page meanwhile."""
    source = (ROOT / "pages" / page).read_text(encoding="utf-8")
    assert first_project_import(source) == "import qvka_app.shared as ui"
    assert first_project_import("import os\nfrom qvka_app import families\n"
                                "import qvka_app.shared as ui\n") != "import qvka_app.shared as ui"


def test_a_streamlit_import_outside_the_app_layer_is_caught(tmp_path: Path) -> None:
    files = {
        "qvka_core/analysis/bad.py": "def f():\n    import streamlit as st\n",  # function-local
        "qvka_core/__init__.py": "from streamlit.runtime import exists\n",
        "scripts/tool.py": "import streamlit.components.v1\n",
        "pages/ok.py": "import streamlit as st\n",  # allowed: a page
        "qvka_app/shared.py": "import streamlit as st\n",  # allowed: the app layer
        "tests/test_ok.py": "from streamlit.testing.v1 import AppTest\n",  # allowed: a driver
        "qvka_core/clean.py": "import os\n",
    }
    for rel, source in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source, encoding="utf-8")
    assert streamlit_importers(tmp_path) == ["qvka_core/__init__.py",
                                             "qvka_core/analysis/bad.py", "scripts/tool.py"]
    (tmp_path / "qvka_app" / "runinfo.py").write_text(
        "from qvka_app import shared\nfrom qvka_app.runs_view import MISSING\n")
    for name in VIEW_MODELS:
        path = tmp_path / (name.replace(".", "/") + ".py")
        if not path.exists():
            path.write_text("def f():\n    import streamlit\n" if "costs" in name else "")
    assert view_model_violations(tmp_path) == ["qvka_app.costs_view imports streamlit",
                                               "qvka_app.runinfo imports qvka_app.shared"]


def _cli(*argv: str) -> str:
    """Code running `qvka ARGV` in-process and printing its exit status."""
    return ("from qvka_core.cli import main\ntry:\n    rc = main(" + repr(list(argv)) + ")\n"
            "except SystemExit as e:\n    rc = e.code or 0\nprint('RC', rc)")


LIGHT = {
    "import": "import qvka_core.config, qvka_core.jobs, qvka_core.train.flags, qvka_core.paths",
    "costing": "import qvka_core.variants, qvka_core.accounting, qvka_core.presets",
    "costs --preset gpt2": _cli("costs", "--preset", "gpt2"),
    "costs --json": _cli("costs", "--d-model", "64", "--n-heads", "4", "--n-layers", "2",
                         "--json"),
    "variants": _cli("variants"),
    "Costs page": ("from streamlit.testing.v1 import AppTest\n"
                   "at = AppTest.from_file(" + repr(str(ROOT / "pages" / "costs.py")) + ", "
                   "default_timeout=120).run()\n"
                   "ok = not at.exception and len(at.get('plotly_chart')) > 0\n"
                   "print('RC', 0 if ok else [e.message for e in at.exception])"),
    "--help": _cli("--help"),
    **{f"{command} --help": _cli(command, "--help") for command in (
        "costs", "convert", "train", "jobs", "paper", "attention", "checkpoints", "export",
        "generate", "warm", "app", "variants")},
}


@pytest.mark.parametrize("what", sorted(LIGHT))
def test_light_entry_points_load_no_torch(what: str) -> None:
    """Configs, costing (the CLI and the Costs page), the job queue and every --help run
    without torch, and succeed."""
    import subprocess
    import sys

    code = LIGHT[what] + "\nimport sys\nprint('TORCH', 'torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "TORCH False"
    if "RC" in LIGHT[what]:
        assert lines[-2] == "RC 0", out[-500:]  # the command or page itself ran and succeeded
