"""The architecture's lines, checked on the source: the core never imports the testbed, and the
package's imports (module-level and inside functions alike) form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "afd"
CORE = ("afd.student", "afd.methods", "afd.disc", "afd.teacher", "afd.train")
TESTBED = ("afd.world", "afd.eval")
# Trainers of the built-in world's own models: they pretrain on world clips and evaluate with it.
TESTBED_TRAINERS = ("afd.train.pretrain", "afd.train.codec_train")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """afd module -> the afd modules it imports anywhere in its source (a ``from X import name``
    counts as X.name when that is a module, else X)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in files else node.module)
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def within(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_core_never_imports_the_testbed():
    """Directly or through any other afd module (e.g. a helper the trainer imports)."""
    graph = import_graph()
    leaks = []
    for mod in sorted(graph):
        if not within(mod, CORE) or within(mod, TESTBED_TRAINERS):
            continue
        seen, todo = {mod: [mod]}, [mod]
        while todo:
            cur = todo.pop()
            for dep in sorted(graph[cur]):
                if dep not in seen:
                    seen[dep] = seen[cur] + [dep]
                    todo.append(dep)
        leaks += [" -> ".join(path) for dep, path in seen.items() if within(dep, TESTBED)]
    assert not leaks, "\n".join(leaks)


def test_no_import_cycles():
    graph = import_graph()
    cycles, state = [], {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = "open"
        for dep in sorted(graph[mod]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", ["afd.world.teacher", "afd.world.state_codec", "afd.eval.world_judge",
                                    "afd.world.splits"])
def test_the_testbed_plugs_in_by_name(module):
    """The core reaches the world's teacher, codec and judge only through registries of module paths."""
    from afd.prompts import WORLD_SPLITS
    from afd.student.formats import CODECS
    from afd.train.judge import JUDGES

    named = [*CODECS.values(), *(v for v in JUDGES.values() if v), WORLD_SPLITS, "afd.world.teacher:WorldTeacher"]
    assert any(v.split(":")[0] == module for v in named)
    assert (PACKAGE.parent / (module.replace(".", "/") + ".py")).is_file()
