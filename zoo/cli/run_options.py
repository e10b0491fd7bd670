"""The options of a ``zoo train`` run, recorded when it starts and restored by ``--resume``.

``zoo train`` records every option of its command line (:func:`record_options`) in
``OUT/run.json`` and in each checkpoint's ``state.pt``. ``zoo train --resume RUN`` then
takes them all from the checkpoint (:func:`restore_options`): model, data, batch size,
image size, rates, seed, overrides... An option given again with the same value is
fine; with another value it is refused (exit 2, naming it), unless it is one of
:data:`MAY_CHANGE`, which do not change what is learnt (a later end, how often to
evaluate or checkpoint, data-loading processes, progress and logging): those are
accepted and reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zoo.cli.args import parse_overrides

# Options that a resumed run may change (its argparse dests).
MAY_CHANGE = frozenset(
    {
        "epochs",
        "max_steps",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "workers",
        "no_progress",
        "tensorboard",
        "log_every",
        "compile",
    }
)
# Not options of the run: where it goes and how this command was started.
NOT_RECORDED = frozenset(
    {"resume", "out", "overwrite", "debug", "command", "command_runner", "given"}
)


def _plain(dest: str, value: Any) -> Any:
    """An option's value as JSON and ``torch.load(weights_only=True)`` take it."""
    if isinstance(value, Path):
        return str(value.expanduser().resolve()) if dest == "data" else str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _comparable(dest: str, value: Any) -> Any:
    """The value two spellings of one option share (paths resolved, overrides parsed)."""
    if value is None:
        return None
    if dest == "data":
        return str(Path(value).expanduser().resolve())
    if dest == "overrides":
        return parse_overrides(list(value))
    if isinstance(value, (tuple, list)):
        return [float(v) if isinstance(v, (int, float)) else v for v in value]
    return value


def record_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the run ``args`` (parsed by ``parser``), as plain values."""
    dests = {a.dest for a in parser._actions if a.dest != argparse.SUPPRESS}
    return {
        dest: _plain(dest, getattr(args, dest))
        for dest in sorted(dests - NOT_RECORDED)
        if hasattr(args, dest)
    }


def given_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The options the command line gave (their dests), defaults left out: ``args.given``
    (set by :func:`zoo.cli.main.main`), else those whose value is not their default."""
    given = getattr(args, "given", None)
    if given is not None:
        return set(given)
    return {
        a.dest
        for a in parser._actions
        if hasattr(args, a.dest) and getattr(args, a.dest) != a.default
    }


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    action = next((a for a in parser._actions if a.dest == dest), None)
    return max(action.option_strings, key=len) if action and action.option_strings else dest


def restore_options(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    stored: dict[str, Any],
    checkpoint: Path,
    reached: tuple[int, int],
) -> list[str]:
    """Set the options of ``args`` to the run's ``stored`` ones (from ``checkpoint``).

    ``reached`` is the checkpoint's (step, epochs done): a changed ``--max-steps`` or
    ``--epochs`` must lie beyond it.

    Returns:
        One line per option the command line changed (of :data:`MAY_CHANGE`).

    Exits (``parser.error``, status 2) naming the first option given with a value that
    differs from the run's and may not change.
    """
    given = given_options(parser, args)
    changed = []
    for dest, value in stored.items():
        if dest in NOT_RECORDED or not hasattr(args, dest):
            continue  # an option this version no longer has
        if dest not in given:
            setattr(args, dest, Path(value) if dest == "data" and value is not None else value)
            continue
        mine = getattr(args, dest)
        if _comparable(dest, mine) == _comparable(dest, value):
            continue
        flag = _flag(parser, dest)
        if dest not in MAY_CHANGE:
            allowed = ", ".join(sorted(_flag(parser, d) for d in MAY_CHANGE if hasattr(args, d)))
            parser.error(
                f"argument {flag}: {_shown(mine)} differs from the resumed run's "
                f"{_shown(value)} (recorded in {checkpoint}); a resumed run keeps its "
                f"options: leave {flag} out, or start a new run in another --out "
                f"(options that may change on resume: {allowed})"
            )
        step, epochs = reached
        beyond = {"max_steps": step, "epochs": epochs}
        if dest in beyond and mine is not None and mine <= beyond[dest]:
            parser.error(
                f"argument {flag}: {mine} is not beyond the checkpoint it resumes, at step "
                f"{step} after {epochs} epochs ({checkpoint})"
            )
        changed.append(f"{flag} {_shown(mine)} (the run had {_shown(value)})")
    return changed


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "(none)"
    return str(value)
