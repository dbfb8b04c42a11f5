#!/usr/bin/env python3
"""Checks the crate's module graph: no import cycles, and each side only
depends on the layers below it.

    python3 scripts/check_layers.py

Reads every file under src/, resolves each `crate::…` and `super::…` path it
names to the module that owns it, and reports:
  * cycles between modules that are not each other's ancestors (a parent
    declaring its children is not a cycle), at every depth: between single
    files, and between folders (all of `client::bench` against all of
    `client::report`);
  * a layer that reaches up: the shared layer (error, frame, protocol,
    units, machine, transport, tls) must not use work/, runtime/, server/,
    client/ or cli/; work/ must not use anything above it; runtime/ (the
    pool and the HTTP endpoint that tc-server and tc-worker both run) and
    remote/ (NATS, shared by gateways and hosts) sit above work/; server/
    and host/ (tc-worker) sit above those and never use each other; cli/
    (the flags, and the binaries' start-up) must not use client/, which
    reads its flags from cli/ and serves --metrics-addr with runtime/'s
    HTTP endpoint; client/ uses server/ in one file only
    (`client::bench::embedded`, for `--embedded`). No exceptions beyond
    that one.
Exit status 0 when clean, 1 otherwise. Comments are skipped: a doc link
pointing up or across ("see the server's ...") helps a reader and is not an
import. Unit tests (after `#[cfg(test)]`) are skipped too.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Which top-level modules each side may use (besides itself).
SHARED = {"error", "frame", "protocol", "units", "transport", "tls", "machine"}
ALLOWED = {
    "error": {"frame"},
    "frame": set(),
    "units": set(),
    "machine": {"protocol"},
    "transport": set(),
    "tls": {"error"},
    "protocol": {"error", "frame", "units", "machine"},
    "work": SHARED,
    # What tc-server and tc-worker both run: the pool, the HTTP endpoint.
    "runtime": SHARED | {"work"},
    "remote": SHARED | {"work"},
    "server": SHARED | {"work", "runtime", "remote"},
    # A worker host uses nothing of server/.
    "host": SHARED | {"work", "runtime", "remote"},
    "cli": SHARED | {"work", "runtime", "remote", "server", "host"},
    # tc-client serves its own /metrics (--metrics-addr) on the runtime's
    # HTTP endpoint, as tc-server and tc-worker do.
    "client": SHARED | {"work", "runtime", "server", "cli"},
}
# The client may name server types in exactly one place: `--embedded` starts
# a server in the same process.
CLIENT_EMBEDS_SERVER = {"client::bench::embedded"}


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def known_modules() -> set:
    return {module_of(p) for p in SRC.rglob("*.rs")}


def resolve(segments: list, modules: set) -> tuple:
    """The longest prefix of `segments` that is a module."""
    for end in range(len(segments), 0, -1):
        candidate = tuple(segments[:end])
        if candidate in modules:
            return candidate
    return ()


def edges(modules: set) -> dict:
    graph = {m: set() for m in modules}
    # `crate::a::b`, `super::a`, and `use super::{a, b::c}` (one level of braces).
    path_re = re.compile(r"\b(crate|super)((?:::\w+)*)(?:::\{([^{}]*)\})?")
    for file in SRC.rglob("*.rs"):
        here = module_of(file)
        # Everything after the unit tests is test code: it may reach anywhere
        # inside its own module's side.
        text = file.read_text().split("#[cfg(test)]")[0]
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        found = []
        for root, rest, braced in path_re.findall(text):
            prefix = [seg for seg in rest.split("::") if seg]
            if braced:
                for item in braced.split(","):
                    item = item.strip().split(" as ")[0]
                    if item and item != "self":
                        found.append((root, prefix + [seg for seg in item.split("::") if seg]))
            if prefix:
                found.append((root, prefix))
        for root, segments in found:
            if root == "crate":
                absolute = segments
            else:
                # `super` is the parent of the module this file defines
                # (for a mod.rs, the parent of its folder's module).
                base = list(here)[:-1]
                while segments and segments[0] == "super":
                    segments = segments[1:]
                    base = base[:-1]
                absolute = base + segments
            target = resolve(absolute, modules)
            if target and target != here:
                graph[here].add(target)
    return graph


def is_ancestor(a: tuple, b: tuple) -> bool:
    return len(a) < len(b) and b[: len(a)] == a


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan),
    ignoring edges between a module and its own descendants."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if is_ancestor(v, w) or is_ancestor(w, v):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def collapse(graph: dict, depth: int) -> dict:
    """The same graph with every module folded into its ancestor at `depth`
    (so `client::bench::sweep` counts as `client::bench` at depth 2): a cycle
    between two folders shows even when no two single files form one."""
    folded = {}
    for source, targets in graph.items():
        folded.setdefault(source[:depth], set()).update(t[:depth] for t in targets)
    for source in folded:
        folded[source].discard(source)
    for targets in list(folded.values()):
        for target in targets:
            folded.setdefault(target, set())
    return folded


def main() -> int:
    modules = known_modules()
    graph = edges(modules)
    problems = []
    seen = set()
    for depth in range(1, 1 + max(len(m) for m in modules)):
        for component in cycles(collapse(graph, depth)):
            key = tuple(component)
            if key not in seen:
                seen.add(key)
                names = ", ".join("::".join(m) or "crate" for m in component)
                problems.append(f"import cycle between: {names}")
    for source, targets in sorted(graph.items()):
        if not source:
            continue
        side = source[0]
        for target in sorted(targets):
            if not target or target[0] == side or target[0] not in ALLOWED:
                continue
            if side == "client" and target[0] == "server" and "::".join(source) in CLIENT_EMBEDS_SERVER:
                continue
            if target[0] not in ALLOWED.get(side, set()) or (side == "client" and target[0] == "server"):
                problems.append(f"{'::'.join(source)} uses {'::'.join(target)}: {side}/ may not depend on {target[0]}/")
    for problem in problems:
        print(problem)
    print(f"{len(modules)} modules, {sum(len(t) for t in graph.values())} dependencies, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
