"""Pipelines as DAGs of steps: cycle detection at submit, readiness, and skipping on failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a list of step names (first repeated at the end), or None. Iterative DFS, so a
    long chain cannot hit the recursion limit."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    for root in sorted(deps):
        if color[root] != WHITE:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = GREY
        while stack:
            node, i = stack[-1]
            children = [d for d in deps.get(node, ()) if d in color]
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if color[child] == GREY:
                    return [*path[path.index(child) :], child]
                if color[child] == WHITE:
                    color[child] = GREY
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = BLACK
                stack.pop()
                path.pop()
    return None


def ready_steps(deps: Mapping[str, Sequence[str]], succeeded: set[str], started: set[str]) -> list[str]:
    """Steps not yet started whose parents have all succeeded."""
    return sorted(s for s, parents in deps.items() if s not in started and all(p in succeeded for p in parents))


def descendants(deps: Mapping[str, Sequence[str]], failed: str) -> set[str]:
    """Every step that depends, directly or not, on `failed` (they are skipped)."""
    children: dict[str, list[str]] = {s: [] for s in deps}
    for step, parents in deps.items():
        for p in parents:
            children.setdefault(p, []).append(step)
    out: set[str] = set()
    todo = list(children.get(failed, ()))
    while todo:
        step = todo.pop()
        if step not in out:
            out.add(step)
            todo.extend(children.get(step, ()))
    return out
