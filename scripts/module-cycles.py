#!/usr/bin/env python3
"""Fails when modules of a crate import each other, directly or in a loop.

A module is a source file. Module A depends on module B when A names a path into B
(`use crate::b::X`, `super::b::f()`, `crate::b::X` in an expression) or an item defined in
B's own file. A parent's `mod` declarations and `pub use` re-exports (facades) are not
dependencies. Every strongly connected group of more than one module is reported.

Usage: scripts/module-cycles.py [crate_src_dir ...]   (default: every crate of the workspace)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ["engine/src", "sql/src", "kafka/src", "sources/src", "sinks/src", "testkit/src", "src",
           "benches/src", "operator/src"]


def modules(src):
    """module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue  # binaries are crates of their own
            out[tuple(rel)] = path
    return out


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_BLOCK = re.compile(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    if cur:
        parts.append(cur)
    return [p2 for p in parts for p2 in expand(prefix + p)]


def resolve(mods, here, is_dir_module, path, inline=False):
    """The module a path like `super::x::Y` lands in, or None (outside the crate). Inside
    an inline module (`mod tests { ... }`), `super` is the file's own module."""
    segs = path.split("::")
    if inline and segs[0] == "super":
        segs = ["self"] + segs[1:]
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here if is_dir_module else here[:-1]
        # `self` in a file module is the module itself
        base = here if segs[0] == "self" else base
        if segs[0] == "super":
            base = here[:-1]
        segs = segs[1:]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    else:
        return None
    best = base
    for i in range(len(segs)):
        cand = base + tuple(segs[: i + 1])
        if cand in mods:
            best = cand
        else:
            break
    return best


def deps(mods):
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        text = strip(open(path).read())
        is_dir = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        # Inline modules (`mod tests { ... }`) come last in a file: from the first one on,
        # `super` is the file's own module.
        m_inline = re.search(r"\bmod \w+\s*\{", text)
        inline_at = m_inline.start() if m_inline else len(text)
        reexports = set()
        for u in USE_BLOCK.finditer(text):
            stmt = u.group(0)
            for p in expand(u.group(1)):
                p = p.split(" as ")[0]
                if not re.match(r"^(crate|super|self)\b", p):
                    continue
                target = resolve(mods, m, is_dir, p, u.start() > inline_at)
                if target is None or target == m:
                    continue
                if stmt.lstrip().startswith("pub") and target[: len(m)] == m:
                    reexports.add(target)  # a facade re-exporting its own child
                    continue
                graph[m].add(target)
        body = USE_BLOCK.sub(lambda u: " " * len(u.group(0)), text)
        for p in PATH.finditer(body):
            full = p.group(0).rstrip(":{")
            target = resolve(mods, m, is_dir, full, p.start() > inline_at)
            if target is not None and target != m:
                graph[m].add(target)
        # a parent naming a child in code (`child::f()`) is an ordinary dependency
        for child in [c for c in mods if len(c) == len(m) + 1 and c[: len(m)] == m]:
            if re.search(r"(?<![:\w])" + child[-1] + r"::", body):
                graph[m].add(child)
    return graph


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    srcs = sys.argv[1:] or [d for d in DEFAULT if os.path.isdir(os.path.join(ROOT, d))]
    bad = 0
    for src in srcs:
        mods = modules(os.path.join(ROOT, src))
        graph = deps(mods)
        for comp in sccs(graph):
            bad += 1
            names = sorted("::".join(c) or "(crate root)" for c in comp)
            print(f"{src}: modules import each other: {', '.join(names)}")
            for a in sorted(comp):
                for b in sorted(graph[a] & set(comp)):
                    print(f"    {'::'.join(a) or '(root)'} -> {'::'.join(b) or '(root)'}")
    if bad:
        sys.exit(1)
    print("no module import cycles in " + ", ".join(srcs))


if __name__ == "__main__":
    main()
