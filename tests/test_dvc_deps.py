"""Contract: each DVC stage's code deps are exactly the repository code it runs.

A stage that imports a file it does not list runs stale (an edit there does not re-run it);
a stage that lists code it never imports re-runs for nothing (an edit to the gate's evidence
code must not re-run the fine-tune). Both directions are checked, from the imports themselves:
every ``import``/``from ... import`` of a ``pipeline`` module, at any depth of a function, and
``importlib.import_module(f"pipeline.<package>. ...")``, which loads any module of that package,
and the Jinja2 templates of ``pipeline/templates/`` a file names (a page a stage renders is
code too: an edit there must re-run the stage that writes the page).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGE = "pipeline"
TEMPLATES = Path(PACKAGE) / "templates"
TEMPLATE_NAME = re.compile(r"[\w.-]+\.j2")


def templates_named(text: str) -> set[Path]:
    """The templates a piece of text names (a ``render_page`` argument, a ``{% from/include %}``)."""
    return {TEMPLATES / name for name in TEMPLATE_NAME.findall(text) if (REPO / TEMPLATES / name).is_file()}


def module_file(name: str) -> Path | None:
    """The file of a ``pipeline`` module or package, relative to the repo; None if not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = Path(*name.split("."))
    if (REPO / base).with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (REPO / base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_files(path: Path) -> set[Path]:
    """The repository files one file imports directly.

    A package's ``__init__.py`` counts when the package itself is imported for a name it
    defines, not when it is only the parent of an imported module.
    """
    found: set[Path] = set()
    if path.suffix == ".j2":
        return templates_named((REPO / path).read_text(encoding="utf-8"))
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= templates_named(node.value)
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = module_file(alias.name)
                if target is not None:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = module_file(f"{node.module}.{alias.name}")  # a module of a package
                if sub is not None:
                    found.add(sub)
                else:
                    target = module_file(node.module)
                    if target is not None:
                        found.add(target)
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            arg = node.args[0] if node.args else None
            prefix = ""
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                prefix = arg.value
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
            package = prefix.rstrip(".") if prefix.endswith(".") else None
            if package and module_file(package) is not None:
                found.update(p.relative_to(REPO) for p in (REPO / Path(*package.split("."))).glob("*.py"))
    return found


def closure(entry: Path) -> set[Path]:
    """Every repository file ``entry`` runs, itself included."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported_files(path) - seen)
    return seen


def code_deps(stage: dict) -> set[Path]:
    """The stage's deps that name repository code (files or folders under ``pipeline/``)."""
    return {Path(d) for d in stage.get("deps", []) if isinstance(d, str) and d.split("/")[0] == PACKAGE}


def covered(path: Path, deps: set[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
PYTHON_STAGES = {name: s for name, s in STAGES.items() if str(s["cmd"]).startswith("python -m pipeline.")}


def test_every_stage_runs_a_pipeline_module():
    assert PYTHON_STAGES, "dvc.yaml has no `python -m pipeline.<stage>` stage"
    assert set(PYTHON_STAGES) == set(STAGES), "a stage runs something the contract cannot read its imports from"


def mismatches(name: str, stage: dict) -> tuple[list[str], list[str]]:
    """(code the stage imports but does not list, code it lists but never imports)."""
    module = stage["cmd"].split()[2]
    entry = module_file(module)
    assert entry is not None, f"dvc.yaml: stages.{name}.cmd runs {module}, which is not a file of this repository"
    runs = closure(entry)
    deps = code_deps(stage)
    missing = sorted(str(p) for p in runs if not covered(p, deps))
    unused = []
    for dep in sorted(deps):
        if (REPO / dep).is_dir():
            files = {p.relative_to(REPO) for p in (REPO / dep).rglob("*.py")}
            if not files <= runs:
                unused.append(f"{dep} (the stage does not import {sorted(str(p) for p in files - runs)})")
        elif dep not in runs:
            unused.append(str(dep))
    return missing, unused


@pytest.mark.parametrize("name", sorted(PYTHON_STAGES))
def test_stage_deps_name_exactly_the_code_it_imports(name):
    missing, unused = mismatches(name, PYTHON_STAGES[name])
    assert not missing, f"dvc.yaml: stages.{name}.deps lacks code the stage imports: add {missing}"
    assert not unused, f"dvc.yaml: stages.{name}.deps lists code the stage never imports: remove or narrow {unused}"


def test_the_contract_catches_a_missing_and_a_needless_dep():
    stage = PYTHON_STAGES["evaluate"]
    without = {**stage, "deps": [d for d in stage["deps"] if d != "pipeline/common/training.py"]}
    assert mismatches("evaluate", without)[0] == ["pipeline/common/training.py"]
    whole = {**stage, "deps": [*stage["deps"], "pipeline/common", "pipeline/finetune.py"]}
    unused = mismatches("evaluate", whole)[1]
    assert any(u.startswith("pipeline/common (") and "pipeline/common/rules.py" in u for u in unused)
    assert "pipeline/finetune.py" in unused


def test_the_contract_sees_imports_inside_functions():
    """The checker itself: a function-level import and a dynamic package import are found."""
    assert Path("pipeline/common/training.py") in closure(Path("pipeline/evaluate.py"))  # imported inside a function
    report = closure(Path("pipeline/report.py"))
    assert {
        TEMPLATES / "compliance_report.html.j2",
        TEMPLATES / "fairness.html.j2",
        TEMPLATES / "macros.html.j2",
    } <= report
    assert TEMPLATES / "monitoring_report.html.j2" not in report
    recognizers = {p for p in closure(Path("pipeline/scrub.py")) if p.parent == Path("pipeline/recognizers")}
    assert Path("pipeline/recognizers/street_address.py") in recognizers  # loaded by import_module
    assert Path("pipeline/finetune.py") not in closure(Path("pipeline/evaluate.py"))


@pytest.mark.parametrize("name", sorted(PYTHON_STAGES))
def test_no_stage_module_imports_another(name):
    """A stage imports only ``pipeline/common`` (and the recognizers, templates) besides itself:
    code two stages share lives in ``common/``, so a stage's deps never drag in another stage."""
    stage_modules = {module_file(s["cmd"].split()[2]) for s in PYTHON_STAGES.values()}
    own = module_file(PYTHON_STAGES[name]["cmd"].split()[2])
    others = sorted(str(p) for p in closure(own) & stage_modules if p != own)
    assert not others, (
        f"pipeline stage {own} imports the stage module(s) {others}: move what it uses into pipeline/common/"
    )
