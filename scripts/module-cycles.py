#!/usr/bin/env python3
"""Fails when a module imports another that imports it back (DESIGN.md,
"Inside the proxy": no two modules import each other).

For each crate's src/ and each module directory under it, it reads the
sibling modules each file names (`crate::m`, `super::m`, `self::m` and
`use m::…` in a mod.rs, comments and `#[cfg(test)]` parts left out) and
reports every cycle among siblings. Usage: scripts/module-cycles.py [DIR…]
(default: every crate's src/ in the workspace but the test harness's,
tests/src, whose upstream helpers and their handlers still import each
other).
"""
import os
import re
import sys


def strip(text):
    text = re.sub(r'//[^\n]*', '', text)
    return text.split('#[cfg(test)]')[0]


def module_of(path, base):
    top = os.path.relpath(path, base).split(os.sep)[0]
    return top[:-3] if top.endswith('.rs') else top


def graph_of(directory, is_crate_root):
    """Sibling-module graph of one directory."""
    entries = os.listdir(directory)
    mods = {e[:-3] for e in entries if e.endswith('.rs')} | {
        e for e in entries if os.path.isdir(os.path.join(directory, e)) and not e.startswith('tests')
    }
    mods -= {'main', 'lib', 'mod'}
    name = os.path.basename(os.path.normpath(directory))
    graph = {m: set() for m in mods}
    for root, _, files in os.walk(directory):
        for f in files:
            if not f.endswith('.rs') or f.endswith('_tests.rs') or '/tests' in root[len(directory):]:
                continue
            path = os.path.join(root, f)
            m = module_of(path, directory)
            if m not in graph:
                continue
            text = strip(open(path, encoding='utf-8').read())
            nested = os.path.dirname(path) != os.path.normpath(directory)
            if is_crate_root:
                prefixes = [r'crate::']
            else:
                prefixes = [r'crate::' + name + r'::'] + ([] if nested else [r'super::'])
            deps = set()
            for p in prefixes:
                for hit in re.finditer(p + r'([a-z_][a-z0-9_]*)', text):
                    deps.add(hit.group(1))
                for hit in re.finditer(r'use ' + p.rstrip(':').rstrip(':') + r'::\{([^;]*)\};', text, re.S):
                    depth, cur = 0, ''
                    for ch in hit.group(1) + ',':
                        depth += ch == '{'
                        depth -= ch == '}'
                        if depth == 0 and ch == ',':
                            deps.add(cur.strip().split('::')[0])
                            cur = ''
                        else:
                            cur += ch
            graph[m] |= {d for d in deps if d in mods and d != m}
    return graph


def cycles(graph):
    found, state = [], {}

    def visit(v, stack):
        state[v] = 1
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                found.append(stack[stack.index(w):] + [w] if w in stack else [v, w])
            elif w not in state:
                visit(w, stack + [w])
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [v])
    return found


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    crates = sys.argv[1:] or sorted(
        os.path.join(root, c, 'src')
        for c in os.listdir(root)
        if c != 'tests' and os.path.isfile(os.path.join(root, c, 'src', 'lib.rs'))
    )
    bad = 0
    for src in crates:
        for directory, _, _ in os.walk(src):
            if os.path.basename(directory) == 'tests':
                continue
            for cycle in cycles(graph_of(directory, directory == src)):
                print(f"{os.path.relpath(directory, root)}: {' -> '.join(cycle)}")
                bad += 1
    if bad:
        print(f"{bad} module cycle(s): a module imports another that imports it back", file=sys.stderr)
        sys.exit(1)
    print("no module imports another that imports it back")


main()
