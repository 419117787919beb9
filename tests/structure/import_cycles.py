"""Import circles between the modules of each crate.

Reads every `use crate::...` (and `crate::...` paths in code) of the two
crates' sources and builds a graph between top-level modules (`actors`:
hub, room, session, persistence, store, ...; `src`: routes, startup, auth,
...). Prints each circle found and exits 1 if there is any.

    python3 tests/structure/import_cycles.py
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATES = {"actors": ROOT / "actors" / "src", "src": ROOT / "src"}
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)


def module_of(src: pathlib.Path, file: pathlib.Path) -> str:
    first = file.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def graph(src: pathlib.Path) -> dict:
    edges = {}
    for file in src.rglob("*.rs"):
        here = module_of(src, file)
        if here in ("lib", "main"):
            continue
        text = file.read_text(encoding="utf-8")
        # Test modules may reach anywhere; only the shipped code counts.
        text = re.split(r"#\[cfg\(test\)\]", text)[0]
        targets = set(PATH.findall(text))
        for group in GROUP.findall(text):
            targets.update(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)\s*(?:::|,|}|$)", group))
        known = {module_of(src, f) for f in src.rglob("*.rs")}
        for target in targets:
            if target in known and target != here and target not in ("lib", "main"):
                edges.setdefault(here, set()).add(target)
    return edges


def circles(edges: dict) -> list:
    found, seen = [], set()

    def walk(node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle + [nxt])
            elif len(path) < 8:
                walk(nxt, path + [nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def main() -> int:
    total = 0
    for name, src in CRATES.items():
        cycles = circles(graph(src))
        total += len(cycles)
        print(f"{name}: {len(cycles)} import circle(s)")
        for cycle in cycles:
            print("  " + " -> ".join(cycle))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
