"""The driver side's import structure: no cycle among search/*.py, and the commands that only
read MLflow do not pull in Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SEARCH = Path(__file__).resolve().parents[2] / "search"


def search_imports(path: Path) -> set[str]:
    """Modules of search/ that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import ... / from . import x, y
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("gantune.search"):
                rest = node.module.removeprefix("gantune.search").lstrip(".")
                found |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("gantune.search.")}
    return found & {p.stem for p in SEARCH.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_the_cycle_the_move_removed():
    # tuner -> plots -> report -> tuner, as it was at 6b7b680
    assert find_cycle({"tuner": {"plots"}, "plots": {"report"}, "report": {"tuner"}}) == [
        "plots",
        "report",
        "tuner",
        "plots",
    ]
    assert find_cycle({"tuner": {"plots"}, "report": {"plots"}}) is None


def test_no_import_cycle_among_search_modules():
    graph = {p.stem: search_imports(p) for p in SEARCH.glob("*.py")}
    assert graph["report"] >= {"runs", "leaderboard", "plots"}  # the parser sees relative imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_report_module_loads_no_ray():
    code = (
        "import sys, gantune.search.report; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
