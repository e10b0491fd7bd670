"""``python -m msda_ops``: which backends this machine has, and which one ``auto`` runs."""

from __future__ import annotations

from msda_ops.availability import backends, describe

if __name__ == "__main__":
    print(describe(backends()))
