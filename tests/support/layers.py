"""Layering of a package: rooms (dotted prefixes) in floors, lowest first. A module may
import its own room and the floors below; an import to a higher floor, or sideways to
another room of the same floor, is a violation."""

from __future__ import annotations

from collections.abc import Sequence


def room_of(module: str, floors: Sequence[Sequence[str]]) -> tuple[int, str]:
    """(floor, room) of ``module``: the longest room prefix that contains it."""
    best: tuple[int, str] | None = None
    for floor, rooms in enumerate(floors):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and (
                best is None or len(room) > len(best[1])
            ):
                best = (floor, room)
    if best is None:
        raise ValueError(f"{module} is in no room of the floor plan; add it")
    return best


def layering_violations(graph: dict[str, set[str]], floors: Sequence[Sequence[str]]) -> list[str]:
    """``"a -> b"`` for every import of ``graph`` that goes up a floor or sideways."""
    found = []
    for module, targets in sorted(graph.items()):
        floor, room = room_of(module, floors)
        for target in sorted(targets):
            t_floor, t_room = room_of(target, floors)
            if t_room != room and t_floor >= floor:
                found.append(f"{module} -> {target}")
    return found
