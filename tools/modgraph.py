#!/usr/bin/env python3
"""Import cycles between a crate's modules, from `cargo modules dependencies` (cargo-modules 0.27).

    tools/modgraph.sh                      # both crates; exit 1 if either has a cycle
    cargo modules dependencies --lib -p dhi-policy --no-externs --no-sysroot | tools/modgraph.py crates/dhi-policy/src

cargo-modules draws an item-level graph ("uses" edges between functions, types and modules, and
"owns" edges from a module to what it declares). Its own `--acyclic` also fails on a type and its
methods, which is no import cycle, so this collapses every item into the module that declares it
(a file, or an inline module) and looks for cycles in the "uses" edges that remain. Paths are the
ones rust-analyzer resolved, so a `crate::Engine` taken through a re-export in lib.rs counts as a
use of the module that defines `Engine`: a loop hidden behind a re-export shows up as one.
"""

import re
import pathlib
import sys
from collections import defaultdict

NODE = re.compile(r'^\s*"([^"]+)" \[label="([^|"]*)\|')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')


def read(lines):
    modules, edges = set(), []
    for line in lines:
        if m := EDGE.match(line):
            edges.append((m[1], m[2]))
        elif m := NODE.match(line):
            kind = m[2].split()[-1]
            if kind in ("mod", "crate"):
                modules.add(m[1])
    return modules, edges


def module_of(path, modules):
    while path not in modules and "::" in path:
        path = path.rsplit("::", 1)[0]
    return path if path in modules else None


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)(::\{([^{}]*)\})?")


def without_test_modules(text):
    """The text less each `#[cfg(test)] mod NAME { ... }` (braces matched)."""
    out, rest = [], text
    while (at := rest.find("#[cfg(test)]")) >= 0:
        out.append(rest[:at])
        rest = rest[at + len("#[cfg(test)]"):]
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", rest)
        if not m:
            continue
        depth, i = 1, m.end()
        while i < len(rest) and depth:
            depth += {"{": 1, "}": -1}.get(rest[i], 0)
            i += 1
        rest = rest[i:]
    return "".join(out) + rest


def source_edges(root, modules):
    """`crate::`, `super::` and `self::` paths written in the crate's files (outside comments
    and `#[cfg(test)]` code): cargo-modules 0.27 misses paths used only inside function bodies."""
    crate = min(modules, key=len)
    edges = []
    for path in sorted(pathlib.Path(root).rglob("*.rs")):
        rel = path.relative_to(root).with_suffix("")
        parts = [p for p in rel.parts if p not in ("lib", "mod")]
        if parts and parts[-1] == "tests":
            continue
        module = "::".join([crate, *parts])
        if module not in modules:
            continue
        text = path.read_text()
        text = without_test_modules(text)
        text = "\n".join(line.split("//")[0] for line in text.splitlines())
        for m in PATH.finditer(text):
            base = {"crate": crate, "self": module, "super": module.rsplit("::", 1)[0]}[m[1]]
            heads = [m[2]]
            if m[4] is not None:
                heads = [m[2] + "::" + item.strip().split("::")[0].split(" ")[0]
                         for item in m[4].split(",") if item.strip()]
            for head in heads:
                # `crate::Engine` or `super::CertError` name an item of an ancestor, often a
                # re-export: cargo-modules resolves those to where they are defined.
                target = module_of(base + head, modules)
                if target and target != base:
                    edges.append((module, target))
    return edges


def main():
    modules, edges = read(sys.stdin)
    if len(sys.argv) > 1:
        edges += source_edges(sys.argv[1], modules)
    graph, why = defaultdict(set), defaultdict(list)
    for source, target in edges:
        a, b = module_of(source, modules), module_of(target, modules)
        if a and b and a != b:
            graph[a].add(b)
            why[(a, b)].append(f"{source} -> {target}")
        graph.setdefault(a, set()) if a else None
    crate = min(modules, key=len) if modules else "?"
    count = sum(len(v) for v in graph.values())
    print(f"{crate}: {len(modules)} modules, {count} module-to-module use edges")
    found = cycles(graph)
    for component in found:
        print("  cycle: " + " <-> ".join(component))
        members = set(component)
        for a in component:
            for b in sorted(graph[a] & members):
                print(f"    {a} -> {b}   (e.g. {why[(a, b)][0]})")
    if not found:
        print("  no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
