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
        "mtl.bench.benchmarks": "independent measurements, each a function, run in one process",
        "mtl.train.loop": "the loop, its data feeding and its per-task best states"}


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
            and m not in ("mtl.bench.benchmarks", "mtl.__main__")]
    assert hits == []


# the layers, bottom to top: a module may import its own layer and those below it, never one above
LAYERS = [
    ("ground floor", ("mtl.errors", "mtl.params", "mtl.tasks", "mtl.score", "mtl.bootstrap", "mtl.quiet", "mtl.kinds")),
    ("data", ("mtl.data",)),
    ("model", ("mtl.model",)),
    ("methods", ("mtl.methods",)),
    ("train", ("mtl.train",)),
    ("track", ("mtl.track",)),
    ("tune", ("mtl.tune",)),
    ("results", ("mtl.results",)),
    ("serve", ("mtl.serve",)),
    ("bench", ("mtl.bench",)),
    ("commands", ("mtl.commands", "mtl.__main__")),
]


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_every_library_module_is_in_a_declared_layer():
    assert [m for m in modules() if m != "mtl" and layer_of(m) is None] == []


def test_imports_go_down_the_layers_only():
    up = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                if m != "mtl" and layer_of(d) is not None and layer_of(d) > layer_of(m))
    assert up == []


def test_the_layer_check_finds_an_import_upwards():
    assert layer_of("mtl.train.loop") < layer_of("mtl.serve.registry")
    assert layer_of("mtl.somewhere_new") is None


def readme_tree() -> set[str]:
    """The modules the README's file tree names, as paths under mtl/ (`model/hydranet.py`): a line
    `  pkg/` opens a subpackage, the more deeply indented `name.py` lines below it are its modules."""
    readme = (ROOT.parent / "README.md").read_text()
    tree = readme[readme.index("## Files"):]
    tree = tree[tree.index("```") + 3:]
    tree = tree[:tree.index("```")]
    listed, pkg, pkg_indent = set(), None, -1
    for line in tree.splitlines():
        m = re.match(r"^( +)([a-z_]+/|[a-z_]+\.py)(?=\s|$)", line)
        if not m:
            continue
        indent, name = len(m.group(1)), m.group(2)
        if pkg is not None and indent <= pkg_indent:
            pkg = None
        if name.endswith("/"):
            if indent == 2:  # a subpackage of mtl/ (deeper folders are data, not modules)
                pkg, pkg_indent = name, indent
                listed.add(name)
        elif indent == 2 or pkg is not None:
            listed.add((pkg or "") + name)
    return listed


def test_the_readme_file_tree_lists_every_module():
    listed = readme_tree()
    actual = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if p.name != "__init__.py"
              and p.parent.name not in ("kinds", "methods", "commands")}  # those list their files in one line
    actual |= {f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert actual - listed == set(), "README file tree misses these"
    assert listed - actual == set(), "README names modules that are gone"


# the one score rule (mtl/score.py) and the modules that combine tasks' scores through it
SCORE_RULE = {"normalised", "mean_score", "task_mean_score", "val_rank_key", "best_mean"}
SCORE_USERS = ("mtl.train.loop", "mtl.tune.early_stop", "mtl.commands.ensemble", "mtl.results.selection")


def defined_functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_the_score_rule_has_one_home():
    second = {m: sorted(defined_functions(p) & SCORE_RULE) for m, p in modules().items() if m != "mtl.score"}
    assert {m: f for m, f in second.items() if f} == {}
    g = graph()
    assert [m for m in SCORE_USERS if "mtl.score" not in g[m]] == []


# the frozen prefix's one owner (mtl/model/prefix.py): what freeze= means, stages, the in-order check, digests,
# the cache and the shared forward
PREFIX_OWNED = {"forward_is_stages", "digests", "stage_digests", "prefix_digest", "run_stages", "shared_forward",
                "prefix_features", "freeze_backbone", "features_from_prefix"}


def compares_freeze_to_a_string(path: Path) -> bool:
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Compare):
            sides = [n.left, *n.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "freeze" for s in sides) and \
                    any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                return True
    return False


def test_the_frozen_prefix_has_one_owner():
    elsewhere = {m: sorted(defined_functions(p) & PREFIX_OWNED) for m, p in modules().items() if m != "mtl.model.prefix"}
    assert {m: f for m, f in elsewhere.items() if f} == {}
    assert [m for m, p in modules().items() if m != "mtl.model.prefix" and compares_freeze_to_a_string(p)] == []


def test_the_freeze_check_finds_a_comparison(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def f(cfg):\n    return cfg.freeze != "none"\n')
    assert compares_freeze_to_a_string(f)


# each artifact file has one reader and writer (mtl/train/artifacts.py): no other library module names its file
ARTIFACT_FILES = ("index.json", "spec.json", "val_outputs.pt")


def names_an_artifact_file(path: Path) -> list[str]:
    """The string constants of `path`'s code (docstrings left out) that name an artifact file."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs
                   and isinstance(n.value, str) for f in ARTIFACT_FILES if f in n.value})


def test_each_artifact_file_has_one_reader():
    found = {m: names_an_artifact_file(p) for m, p in modules().items() if m != "mtl.train.artifacts"}
    assert {m: f for m, f in found.items() if f} == {}


def test_the_artifact_check_finds_a_second_parser(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('import json\n\n\ndef f(d):\n    return json.loads((d / "checkpoints/index.json").read_text())\n')
    assert names_an_artifact_file(f) == ["checkpoints/index.json"]


def test_a_test_that_leaves_a_temp_file_fails_the_session(pytester):
    """The session-level check in conftest.py: a file left in the temp directory turns a green run red."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_leak="import tempfile, pathlib\n\n"
                                  "def test_leaks():\n"
                                  "    pathlib.Path(tempfile.gettempdir(), 'left-behind.pt').write_text('x')\n",
                        test_clean="import tempfile\n\n"
                                   "def test_clean(tmp_path):\n"
                                   "    with tempfile.TemporaryDirectory() as d:\n"
                                   "        (tmp_path / 'kept-by-pytest').write_text(d)\n")
    leaked = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_leak.py")
    assert leaked.ret == 1 and "left 1 entries in the temp directory: left-behind.pt" in leaked.stdout.str()
    clean = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_clean.py")
    assert clean.ret == 0
