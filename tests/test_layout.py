"""The package's shape: imports run one way (no cycle, hidden in a function or not; no library module imports
a command), modules stay readable, and the README's file tree names exactly the modules there are."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mtl

ROOT = Path(mtl.__file__).parent
# modules allowed past 300 lines, each with its reason (also in the closing note of the layout change)
LONG = {"mtl.data.render": "the two demo sets' drawing code, one concern",
        "mtl.data.manifest": "manifest reading and every validation message, one concern",
        "mtl.methods.base": "the Criterion interface and its two families (loss weightings, Jacobian methods)",
        "mtl.benchmarks": "independent measurements, each a function, run in one process",
        "mtl.training": "the loop, its data feeding and its per-task best states"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str], name: str | None = None) -> set[str]:
    """Every mtl module `path` imports, at module level or inside a function; `if TYPE_CHECKING:` blocks
    (never run) are left out."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for b in node.body for n in ast.walk(b)}
    name = name or module_name(path)
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                if f"{base}.{a.name}" in known:
                    out.add(f"{base}.{a.name}")
                elif base in known:
                    out.add(base)
    return out - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) for m, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_one_hidden_in_a_function(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("import os\n\n\ndef f():\n    from mtl.b import g\n")
    g = {"mtl.a": imports(a, {"mtl.a", "mtl.b"}, "mtl.a"), "mtl.b": {"mtl.a"}}
    assert find_cycle(g) == ["mtl.a", "mtl.b", "mtl.a"]


def test_no_library_module_imports_a_command_or_the_cli():
    bad = {m: sorted(d for d in deps if d.startswith("mtl.commands") or d == "mtl.__main__")
           for m, deps in graph().items() if not m.startswith("mtl.commands") and m != "mtl.__main__"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_commands_do_not_import_each_other():
    bad = {m: sorted(d for d in deps if d.startswith("mtl.commands.")) for m, deps in graph().items()
           if m.startswith("mtl.commands.")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_modules_stay_under_300_lines_or_say_why():
    long = {m for m, p in modules().items() if len(p.read_text().splitlines()) > 300}
    assert long <= set(LONG), long - set(LONG)


def test_no_library_module_names_an_experiment():
    hits = [m for m, p in modules().items() if re.search(r"fgo_rounds|fgo_regularization|utk_weighting", p.read_text())
            and m not in ("mtl.benchmarks", "mtl.__main__")]
    assert hits == []


def test_the_readme_file_tree_lists_every_module():
    readme = (ROOT.parent / "README.md").read_text()
    tree = readme[readme.index("## Files"):]
    tree = tree[:tree.index("\n## ", 5)]
    listed = set(re.findall(r"^\s+([a-z_]+(?:/[a-z_]+)?\.py|[a-z_]+/)", tree, re.M))
    names = {p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"} | {f"{p.name}/" for p in ROOT.iterdir() if p.is_dir()
                                                   and not p.name.startswith("__")}
    assert names - listed == set(), "README file tree misses these"
    assert {n for n in listed if n.endswith(".py") and "/" not in n} - names == set(), "README names modules that are gone"
