"""The house: omnidiff's layers hold (the import-linter contract in pyproject.toml), no module
imports itself through others, and imports hidden inside functions stay few."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import omnidiff

PACKAGE = Path(omnidiff.__file__).parent
ROOT = PACKAGE.parent


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycles():
    """grimp counts imports inside functions too: a cycle cannot hide in one."""
    graph = grimp.build_graph("omnidiff")
    assert import_cycles(graph) == []


def test_cycle_finder_sees_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    assert import_cycles(graph) == [["a", "b", "c"]]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree")
def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    run = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def _imports_inside_functions(path: Path) -> int:
    tree = ast.parse(path.read_text())
    count = 0
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                         .startswith("omnidiff")):
                    count += 1
                elif isinstance(node, ast.Import) and any(a.name.startswith("omnidiff")
                                                          for a in node.names):
                    count += 1
    return count


def test_few_imports_inside_functions():
    """Before the layers there were 193 omnidiff imports inside functions, most to dodge
    cycles; what remains is for optional dependencies and lazy loading."""
    total = sum(_imports_inside_functions(p) for p in PACKAGE.rglob("*.py"))
    assert total <= 64, total


# what docs/plugins.md, docs/core_api.md and the README told plugin authors to import before
# the layers: each old path still answers, with the same objects as the new one
OLD_NAMES = {
    "omnidiff.conditions": ("LabelCond", "NamedCond", "NoCond", "TensorCond", "as_spec",
                            "spec_of", "map_cond", "index_cond", "cat_conds"),
    "omnidiff.domain": ("Domain", "LazyDomain", "data_kwargs", "lazy_exports"),
    "omnidiff.data": ("TensorDictDataset", "collate_batch", "eval_loader", "train_loader"),
    "omnidiff.testing": ("check_domain",),
    "omnidiff.registry": ("get_domain",),
    "omnidiff.schedules": ("get_schedule",),
    "omnidiff.forward": ("q_sample", "markov_step"),
    "omnidiff.predictions": ("PREDICTIONS",),
    "omnidiff.model": ("DiffusionModel",),
    "omnidiff.losses": ("diffusion_loss",),
    "omnidiff.guidance": ("classifier_free",),
    "omnidiff.likelihood": ("log_likelihood",),
    "omnidiff.toy": ("GaussianMixture", "eight_gaussians"),
    "omnidiff.optim": ("adamw",),
    "omnidiff.autoencoder": ("Autoencoder",),
    "omnidiff.reconstruction": ("stft_distance",),
    "omnidiff.checkpoint": ("read_checkpoint", "write_grids", "state_digest"),
    "omnidiff.pipeline": ("Pipeline", "load", "generate_samples"),
    "omnidiff.config": ("compose", "validate", "list_recipes"),
    "omnidiff.samplers.calibrate": ("calibrate_grid",),
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_import_paths_still_work(old):
    import importlib

    module = importlib.import_module(old)
    for name in OLD_NAMES[old]:
        assert getattr(module, name) is not None, f"{old}.{name}"


def test_an_old_path_warns_with_its_new_name():
    run = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                          "import omnidiff.domain"], capture_output=True, text=True)
    assert run.returncode != 0 and "omnidiff.plugins.contract" in run.stderr, run.stderr


def test_an_old_module_is_an_attribute_of_the_package():
    """``import omnidiff; omnidiff.pipeline.load(...)`` worked once anything had imported the
    pipeline; it still does, in a fresh interpreter too."""
    run = subprocess.run([sys.executable, "-c", "import omnidiff; print(omnidiff.pipeline.load"
                          " is omnidiff.load, omnidiff.conditions.LabelCond.__module__)"],
                         capture_output=True, text=True)
    assert run.stdout.split() == ["True", "omnidiff.core.conditions"], run.stderr


def test_a_moved_module_is_the_new_module():
    import omnidiff.conditions as old
    import omnidiff.core.conditions as new

    assert old is new and old.LabelCond is new.LabelCond


def test_samplers_export_what_was_promised():
    import omnidiff.samplers as samplers
    from omnidiff.samplers.calibrate import calibrate_grid

    assert samplers.calibrate_grid is calibrate_grid
    assert callable(samplers.sample) and "dpmpp_2m" in samplers.SAMPLERS
