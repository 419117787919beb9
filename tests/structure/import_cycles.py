"""Import circles between the modules of each crate.

Reads every `crate::...` path in the code of the two crates' sources (`use`
lines, grouped `use crate::{...}` lines and paths written inline; comments
are not code and are skipped) and builds a graph between top-level modules
(`actors`: hub, room, session, persistence, store, ...; `src`: routes,
startup, auth, ...). A name the crate root re-exports (`pub use chat::Chat`
in lib.rs) counts as a use of the module it comes from; anything else
defined in the crate root itself is the node `lib`, so code kept there
cannot hide a circle. Modules compiled only for tests (`#[cfg(test)] mod`
in lib.rs, and `#[cfg(test)]` parts of files) may reach anywhere and are
left out. Prints each circle found and exits 1 if there is any.

    python3 tests/structure/import_cycles.py
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATES = {"actors": ROOT / "actors" / "src", "src": ROOT / "src"}
PATH = re.compile(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)")
GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)
NAME = re.compile(r"(?:^|[,{\s])([A-Za-z_][A-Za-z0-9_]*)\s*(?:::|,|}|$| as )")
COMMENT = re.compile(r"//[^\n]*")
ROOTS = ("lib", "main")


def module_of(src: pathlib.Path, file: pathlib.Path) -> str:
    first = file.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def code_of(file: pathlib.Path) -> str:
    text = file.read_text(encoding="utf-8")
    # Test modules may reach anywhere; only the shipped code counts.
    text = re.split(r"#\[cfg\(test\)\]\s*(?:pub(?:\(\w+\))?\s+)?mod\s+\w+\s*\{", text)[0]
    return COMMENT.sub("", text)


def root_names(src: pathlib.Path):
    """What the crate root re-exports (name -> module), and its test-only modules."""
    root = src / "lib.rs"
    if not root.exists():
        return {}, set()
    text = COMMENT.sub("", root.read_text(encoding="utf-8"))
    exported = {}
    for module, names in re.findall(r"pub use (\w+)::\{?([^;}]*)\}?;", text):
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", names):
            exported[name] = module
    test_only = set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)", text))
    return exported, test_only


def graph(src: pathlib.Path) -> dict:
    exported, test_only = root_names(src)
    modules = {module_of(src, f) for f in src.rglob("*.rs")} - set(ROOTS) - test_only
    edges = {}
    for file in src.rglob("*.rs"):
        here = module_of(src, file)
        if here in test_only or here == "main":
            continue
        text = code_of(file)
        targets = set(PATH.findall(text))
        if here == "lib":
            # The root names its modules without `crate::`.
            targets.update(re.findall(r"\buse\s+(\w+)::", text))
        for group in GROUP.findall(text):
            targets.update(NAME.findall(group))
        for target in targets:
            if target in modules:
                node = target
            elif target in exported:
                node = exported[target]
            elif here == "lib":
                continue
            else:
                node = "lib"
            if node != here:
                edges.setdefault(here, set()).add(node)
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
            elif len(path) < 12:
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
