"""Dependencies run one way: schemas <- streams <- agents <- ratewarden (docs/architecture.md).

Every import in the four packages is read from the source (also imports inside functions), and an
import of a higher layer from a lower one fails the test. The development broker
(``streams.devkafka``) sits apart: production plumbing may consult it only from inside a function
(the local broker's address when none is configured), never at import time.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"schemas": 0, "streams": 1, "agents": 2, "ratewarden": 3}
DEV_BROKER = "streams.devkafka"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend((name, node.lineno, id(node) in top_level) for name in names)
    return found


def violations(root: Path) -> list[str]:
    """Every import against the layer order under ``root``, as ``path:line: importer -> imported``."""
    found = []
    for package, rank in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for imported, line, module_level in _imports(path):
                target = LAYERS.get(imported.split(".")[0])
                where = f"{path.relative_to(root)}:{line}: {module} -> {imported}"
                if target is not None and target > rank:
                    found.append(where)
                elif (imported.startswith(DEV_BROKER) and module_level
                      and package == "streams" and not module.startswith(DEV_BROKER)):
                    found.append(where + " (the dev broker at import time)")
    return found


def test_the_project_imports_only_downwards():
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("streams/back_edge.py", "from agents.policy import decide\n"),
        ("schemas/back_edge.py", "def f():\n    import streams.settings\n"),
        ("agents/back_edge.py", "import ratewarden.cli\n"),
        ("streams/back_edge.py", "from streams.devkafka.broker import LocalKafka\n"),
    ],
)
def test_a_deliberate_back_edge_is_caught(tmp_path: Path, module: str, source: str):
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / module).write_text(source)
    (tmp_path / "agents" / "fine.py").write_text("from streams.settings import Settings\nfrom schemas import events\n")
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(module), found


def test_no_source_or_doc_names_a_path_outside_the_repository():
    """Comments and docs point into the repository only (a reader of a clone has nothing else)."""
    outside = ("../shared", "/work/", "../.library")
    found = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if path.suffix not in (".py", ".md", ".toml", ".sh") or parts[0].startswith(".") or "egg-info" in parts[0]:
            continue
        if parts[0] in ("var",):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(marker in line for marker in outside) and "outside = (" not in line:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
