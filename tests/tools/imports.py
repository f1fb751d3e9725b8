"""The import graph between the project's top-level packages, and its four rules.

    python -m tests.tools.imports            # from the checkout; exit 1 on a violation
    python -m tests.tools.imports --root DIR

Rules:
1. No circle between modules. A hot module and its cold half (`x` and `x_cold`)
   count as one module: they are one unit split for the box's heap.
2. `agent/` imports nothing from a host package: it runs alone on the box.
3. The rest of `agent/` imports the section rules (`agent/rules/`, loaded for a
   check or an effects pass and released as a whole) only inside a function:
   a module-level import would keep them in the box's heap.
4. A call cold("agent.x", "fn", ...) names a module that exists and a function
   that it defines at module level: the call names them as strings, which no
   linter follows, and a wrong one fails only when the rare code runs.

Every import counts, lazy ones inside functions too: a lazy import still ties
the two modules together. So does a call of agent.compat.cold("agent.x_cold", ...),
which imports its module by name.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGES = ("agent", "backend", "benchmarks", "common", "firmware", "flashing", "homebox", "vbox")


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        base = root / pkg
        if not base.is_dir():
            continue
        for f in sorted(base.rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _targets(node: ast.AST, mod: str, is_pkg: bool, known: dict[str, Path]) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        # `from pkg import name`: the submodule pkg.name if there is one, else pkg
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for n in names:
        while n and n not in known:          # `import a.b.c` -> the deepest module we have
            n = n.rpartition(".")[0]
        if n:
            out.append(n)
    return out


def _cold_target(node: ast.AST, known: dict[str, Path]) -> str | None:
    # agent.compat.cold("agent.x_cold", "fn", ...) imports agent.x_cold, by name.
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    f = node.func
    if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) != "cold":
        return None
    n = node.args[0].value
    return n if n in known else None


def graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    g: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(node, mod, path.name == "__init__.py", known):
                    if t != mod:
                        g[mod].add(t)
            elif (t := _cold_target(node, known)) and t != mod:
                g[mod].add(t)
    return g


RULES = "agent.rules"


def _in_rules(mod: str) -> bool:
    return mod == RULES or mod.startswith(RULES + ".")


def _module_level(tree: ast.AST):
    """The imports that run when the module is loaded (not inside a function)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            todo.append(child)


def resident_rules(root: Path, packages=PACKAGES) -> list[tuple[str, str]]:
    """(module, rules module) for each module-level import of agent/rules/ by the
    rest of agent/ (rule 3)."""
    known = modules(root, packages)
    out = set()
    for mod, path in known.items():
        if mod.split(".")[0] != "agent" or _in_rules(mod):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in _module_level(tree):
            for t in _targets(node, mod, path.name == "__init__.py", known):
                if _in_rules(t):
                    out.add((mod, t))
    return sorted(out)


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def dangling_cold_calls(root: Path, packages=PACKAGES) -> list[tuple[str, str, str]]:
    """(calling module, cold module, function) for each cold("agent...", "fn") call
    whose module or function does not exist (rule 4)."""
    known = modules(root, packages)
    out = set()
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and len(node.args) >= 2
                    and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2])):
                continue
            f = node.func
            if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) != "cold":
                continue
            target, fn = node.args[0].value, node.args[1].value
            if not target.startswith("agent"):
                continue
            if target not in known or fn not in _defined(known[target]):
                out.add((mod, target, fn))
    return sorted(out)


def unit(mod: str) -> str:
    return mod[: -len("_cold")] if mod.endswith("_cold") else mod


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan, iterative)."""
    ug: dict[str, set[str]] = {}
    for m, ts in g.items():
        ug.setdefault(unit(m), set()).update(unit(t) for t in ts if unit(t) != unit(m))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for start in sorted(ug):
        if start in index:
            continue
        work = [(start, iter(sorted(ug.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(ug.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def agent_escapes(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, ts in g.items() if m.split(".")[0] == "agent"
                  for t in ts if t.split(".")[0] != "agent")


def package_edges(g: dict[str, set[str]]) -> Counter:
    c: Counter = Counter()
    for m, ts in g.items():
        for t in ts:
            a, b = m.split(".")[0], t.split(".")[0]
            if a != b:
                c[(a, b)] += 1
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    a = ap.parse_args(argv)
    g = graph(a.root)
    print("imports between top-level packages (module imports):")
    for (src, dst), n in sorted(package_edges(g).items()):
        print(f"  {src:<11} -> {dst:<11} {n}")
    bad = 0
    for comp in cycles(g):
        bad += 1
        print("CIRCLE: " + " <-> ".join(comp))
    for m, t in agent_escapes(g):
        bad += 1
        print(f"AGENT IMPORTS A HOST MODULE: {m} -> {t}")
    for m, t in resident_rules(a.root):
        bad += 1
        print(f"RULES KEPT RESIDENT: {m} -> {t} (import them inside the function that needs them)")
    for m, t, fn in dangling_cold_calls(a.root):
        bad += 1
        print(f"COLD CALL TO NOTHING: {m} -> {t}.{fn} (no such module or function)")
    print(f"{len(g)} modules, {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
