"""The import rule: only the modules that run TensorFlow, Keras or librosa load them.

Importing ``pipeline``, ``pipeline.stages`` or any other light module, running ``stpipe --help``
and parsing the DAG files must load none of them: TensorFlow alone takes seconds to import, the
DAG processor parses every file again and again, and a ``fork()`` after TensorFlow has started
its threads can deadlock. Modules that need them import them inside the function that does
(``from pipeline.tfenv import tf`` is the one gateway to TensorFlow and Keras).

Every check runs in a fresh interpreter: the test process itself may well have loaded
TensorFlow already.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

#: Third-party packages that only the heavy modules may load.
HEAVY_PACKAGES = ("tensorflow", "keras", "librosa")

#: The modules allowed to import TensorFlow, Keras or librosa at module level (directly or through
#: one another): they exist to run them, and the others import them inside functions. Names, not
#: package prefixes: ``pipeline.training.validation``, ``pipeline.training.params`` or
#: ``pipeline.model.inputs`` sit beside heavy modules but ``pipeline.stages`` imports them, so
#: they must stay light. A module listed here must really be heavy (tested below).
HEAVY_MODULES = frozenset(
    {
        "pipeline.tfenv",  # the gateway: sets TensorFlow's log level, then imports it
        "pipeline.features.cnn",  # the VGG-16 frame encoder
        "pipeline.model.architecture",  # the LSTM head and the end-to-end model
        "pipeline.model.inference",  # runs a classifier over clips
        "pipeline.training.trainer",  # fits a model
        "pipeline.training.checkpoint",  # Keras callbacks that checkpoint every epoch
    }
)

#: Entry points that run something when imported; they are covered by the CLI tests.
NOT_IMPORTABLE = frozenset({"pipeline.__main__"})

PIPELINE_DIR = REPO / "pipeline"
DAGS_DIR = REPO / "dags"


def _pipeline_modules() -> list[str]:
    """Every module and package under ``pipeline/``, found on disk without importing any."""
    names = ["pipeline"]

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)], prefix):
            names.append(info.name)
            if info.ispkg:
                walk(folder / info.name.rpartition(".")[2], f"{info.name}.")

    walk(PIPELINE_DIR, "pipeline.")
    return sorted(names)


def _light_modules() -> list[str]:
    return [m for m in _pipeline_modules() if m not in HEAVY_MODULES | NOT_IMPORTABLE]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_heavy(imported: str) -> bool:
    """Whether importing ``imported`` (a dotted name) loads something heavy."""
    return imported.partition(".")[0] in HEAVY_PACKAGES or any(
        imported == m or imported.startswith(f"{m}.") for m in HEAVY_MODULES
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import that runs when ``module`` (at ``path``) is imported.

    Module-level statements and the blocks nested in them (``if``, ``try``, ``with``, class
    bodies) run at import; function bodies and ``if TYPE_CHECKING:`` blocks do not. For
    ``from a.b import c`` both ``a.b`` and ``a.b.c`` are given (``c`` may be a submodule).
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: Iterable[ast.AST]) -> Iterator[tuple[int, str]]:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse)
            elif isinstance(node, ast.Import):
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `from . import x`, `from ..y import x`
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                yield node.lineno, base
                yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)
            else:
                yield from visit(ast.iter_child_nodes(node))

    yield from visit([ast.parse(path.read_text(encoding="utf-8"), filename=str(path))])


def _heavy_import_lines(path: Path) -> list[str]:
    """``file:line imports name`` for each import-time import of something heavy."""
    heavy = {
        (line, name)
        for line, name in _import_time_imports(path, _module_name(path))
        if _is_heavy(name)
    }
    # `from pipeline.tfenv import keras` names pipeline.tfenv and pipeline.tfenv.keras: say it once.
    return sorted(
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in heavy
        if (line, name.rpartition(".")[0]) not in heavy
    )


# -- static: the source says it ---------------------------------------------------------------


def test_only_the_declared_heavy_modules_import_heavy_packages_at_module_level() -> None:
    offenders = [
        line
        for path in sorted(PIPELINE_DIR.rglob("*.py")) + sorted(DAGS_DIR.glob("*.py"))
        if _module_name(path) not in HEAVY_MODULES
        for line in _heavy_import_lines(path)
    ]
    assert offenders == [], (
        "these imports load TensorFlow/Keras/librosa when the module is imported: move each "
        "into the function that needs it (or under `if TYPE_CHECKING:` for annotations), or, if "
        "the module exists to run TensorFlow, add it to HEAVY_MODULES:\n" + "\n".join(offenders)
    )


@pytest.mark.parametrize("module", sorted(HEAVY_MODULES))
def test_every_declared_heavy_module_exists_and_is_heavy(module: str) -> None:
    path = REPO / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{module} is in HEAVY_MODULES but {path} does not exist: update it"
    assert _heavy_import_lines(path), (
        f"{module} imports nothing heavy at module level: remove it from HEAVY_MODULES so the "
        "import-rule tests check it"
    )


def test_the_static_check_sees_module_level_imports_only(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import tensorflow as tf\n"
        "if TYPE_CHECKING:\n"
        "    import keras\n"
        "try:\n"
        "    import librosa\n"
        "except ImportError:\n"
        "    pass\n"
        "from pipeline.model import architecture\n"
        "from ..training import checkpoint\n"
        "class Model:\n"
        "    from pipeline.tfenv import keras\n"
        "def embed():\n"
        "    from pipeline.features.cnn import build_embedder\n"
    )
    module = tmp_path / "probe.py"
    module.write_text(source)
    imports = _import_time_imports(module, "pipeline.media.probe")
    found = {name for line, name in imports if _is_heavy(name)}
    assert found == {
        "tensorflow",
        "librosa",
        "pipeline.model.architecture",
        "pipeline.training.checkpoint",
        "pipeline.tfenv",
        "pipeline.tfenv.keras",
    }


# -- dynamic: importing says it ---------------------------------------------------------------

# Imports the targets (module names, or DAG files run as Airflow's DAG processor does: executed
# as a module with dags/ on sys.path) one after another and checks sys.modules right after each,
# stopping at the first that loads something heavy. As long as none does, the interpreter stays
# as clean as a fresh one, so one process checks them all. A meta-path hook that finds nothing
# records where each heavy package was first asked for: the chain of pipeline/ and dags/ lines.
_PROBE = """
import importlib, importlib.util, json, sys, traceback
heavy, heavy_modules, targets, root = json.loads(sys.argv[1])
chains = {}

class RecordFirstImport:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in chains:
            chains[top] = [
                f"{f.filename[len(root):]}:{f.lineno}: {f.line}"
                for f in traceback.extract_stack()
                if f.filename.startswith((root + "pipeline/", root + "dags/"))
            ]
        return None

sys.meta_path.insert(0, RecordFirstImport())
sys.path.insert(0, root + "dags")
checked = []
for target in targets:
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(target[:-3].replace("/", "_"), root + target)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    else:
        importlib.import_module(target)
    loaded = [m for m in heavy + heavy_modules if m in sys.modules]
    if loaded:
        print(json.dumps({"offender": target, "loaded": loaded, "chains": chains}))
        break
    checked.append(target)
else:
    print(json.dumps({"offender": None, "checked": checked}))
"""


def _assert_nothing_heavy_loaded_by(targets: list[str]) -> None:
    """Imports ``targets`` in a fresh interpreter, one after another (see _PROBE); fails naming
    the first that loads TensorFlow, Keras, librosa or a heavy module, with the import chain."""
    argument = json.dumps([HEAVY_PACKAGES, sorted(HEAVY_MODULES), targets, f"{REPO}/"])
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, argument],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    chains = "\n".join(
        f"{package} first imported from:\n    " + "\n    ".join(chain)
        for package, chain in report.get("chains", {}).items()
    )
    assert report["offender"] is None, (
        f"importing {report['offender']} loads {', '.join(report['loaded'])}; import them inside "
        f"the functions that need them.\n{chains}"
    )
    assert report["checked"] == targets


def test_no_light_pipeline_module_loads_tensorflow_keras_or_librosa() -> None:
    _assert_nothing_heavy_loaded_by(_light_modules())


def test_importing_the_package_and_its_stages_loads_nothing_heavy() -> None:
    _assert_nothing_heavy_loaded_by(["pipeline", "pipeline.stages"])


def test_parsing_the_dag_files_loads_nothing_heavy() -> None:
    dag_files = sorted(str(path.relative_to(REPO)) for path in DAGS_DIR.glob("*.py"))
    assert len(dag_files) >= 4, dag_files
    _assert_nothing_heavy_loaded_by(dag_files)


def _heavy_packages_imported_by(args: list[str]) -> tuple[list[str], str]:
    """Runs ``python -X importtime ARGS``; returns the heavy packages it imported, and for each
    the chain of modules that imported it (from the import-time tree)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # "import time: self [us] | cumulative | <indent>name", printed after the module's imports,
    # so the importer of a line is the next line indented less.
    tree = [
        (len(name) - len(name.lstrip()), name.strip())
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
        for name in [line.rsplit("|", 1)[1][1:]]
    ]
    loaded, chains = [], []
    for index, (depth, name) in enumerate(tree):
        if name in HEAVY_PACKAGES:
            loaded.append(name)
            chain, level = [name], depth
            for later_depth, later_name in tree[index + 1 :]:
                if later_depth < level:
                    chain.append(later_name)
                    level = later_depth
            chains.append(" <- ".join(chain))
    return loaded, "\n".join(chains)


@pytest.mark.parametrize(
    "cli_args", [["--help"], ["train", "--help"], ["extract", "--help"]], ids=" ".join
)
def test_stpipe_help_loads_nothing_heavy(cli_args: list[str]) -> None:
    # The real entry point: `python -m pipeline` is the `stpipe` console script (pipeline.cli:main).
    loaded, chains = _heavy_packages_imported_by(["-m", "pipeline", *cli_args])
    assert loaded == [], f"`stpipe {' '.join(cli_args)}` loads {loaded}:\n{chains}"
