#!/usr/bin/env python3
"""Fails when sibling modules of a Rust module import each other in a cycle.

Usage: scripts/check-module-cycles.py DIR [DIR ...]

DIR is a module directory (a crate's `src/`, or a module folder such as
`plugins/sinks/src/statsd`). Its files (`a.rs`, `b/mod.rs`, `b/*.rs`) are the nodes;
`use crate::a::…` / `crate::a::…` paths (for a crate root) or `use super::a::…` (inside a
module folder) are the edges. `#[cfg(test)]` blocks are ignored (tests may reach
anywhere). Prints the edges and exits 1 when there is a cycle.
"""
import os
import re
import sys


def strip_tests(text):
    """Drops `#[cfg(test)] mod … { … }` blocks and `#[cfg(test)] mod x;` lines."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = j + len("#[cfg(test)]")
        rest = text[k:]
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", rest)
        if m:
            i = k + m.end()
            continue
        brace = text.find("{", k)
        semi = text.find(";", k)
        if brace < 0 or (0 <= semi < brace):
            i = semi + 1
            continue
        depth, p = 0, brace
        while p < len(text):
            if text[p] == "{":
                depth += 1
            elif text[p] == "}":
                depth -= 1
                if depth == 0:
                    break
            p += 1
        i = p + 1


def nodes(root):
    found = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs", "mod.rs"):
            found[name[:-3]] = [path]
        elif os.path.isdir(path):
            files = [os.path.join(dp, f) for dp, _, fs in os.walk(path) for f in fs if f.endswith(".rs")]
            found.setdefault(name, []).extend(files)
    return found


def edges(root):
    is_crate_root = os.path.exists(os.path.join(root, "lib.rs")) or os.path.exists(
        os.path.join(root, "main.rs"))
    mods = nodes(root)
    graph = {m: set() for m in mods}
    for mod, files in mods.items():
        for f in files:
            text = strip_tests(open(f, encoding="utf-8").read())
            text = re.sub(r"//[^\n]*", "", text)
            if is_crate_root:
                pattern = r"\bcrate::(\w+)"
            elif os.path.dirname(f) == root:
                pattern = r"\bsuper::(\w+)"
            else:
                pattern = r"\bsuper::super::(\w+)"
            for target in re.findall(pattern, text):
                if target in graph and target != mod:
                    graph[mod].add(target)
            # `use super::{a, b::C}` groups
            if not is_crate_root:
                for group in re.findall(r"\buse\s+super::\{([^}]*)\}", text):
                    for target in re.findall(r"(?:^|,)\s*(\w+)", group):
                        if target in graph and target != mod:
                            graph[mod].add(target)
            else:
                for group in re.findall(r"\buse\s+crate::\{([^}]*)\}", text):
                    for target in re.findall(r"(?:^|,)\s*(\w+)", group):
                        if target in graph and target != mod:
                            graph[mod].add(target)
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def main():
    bad = False
    for root in sys.argv[1:]:
        graph = edges(root.rstrip("/"))
        found = cycles(graph)
        print(f"{root}: {len(graph)} modules, {sum(len(v) for v in graph.values())} imports, "
              f"{len(found)} cycles")
        for c in found:
            print("  cycle: " + " -> ".join(c))
            bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
