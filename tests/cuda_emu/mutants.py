"""Proof that the CUDA emulation can fail (``make test-cuda-emu-mutants``).

Each mutant is one bug a GPU run would expose, applied to a copy of ``csrc`` under
``build/cuda-emu/mutants/<name>``; the harness built on that copy must fail, and with the
expected report (a mutant caught for the wrong reason is a finding too). The originals are
never touched. A pattern that no longer matches the sources fails loudly, so the list cannot
go stale silently.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run import CSRC, ROOT, build, environment


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to csrc
    old: str
    new: str
    expect: str  # in the harness's output
    sanitizer: str = "address"


MUTANTS = [
    Mutant(
        "inactive lanes return before the shuffle",
        "cuda/kernels.cuh",
        "if (kReduce != Reduce::shuffle && !active) return;",
        "if (!active) return;",
        "lane divergence",
    ),
    Mutant(
        "pick_vec ignores alignment",
        "cuda/kernels.cuh",
        "for (const void* ptr : pointers) ok = ok && aligned(ptr, vec * sizeof(scalar_t));",
        "(void)pointers;",
        "misaligned address",
    ),
    Mutant(
        "corner bounds check removed",
        "cuda/kernels.cuh",
        "        if (c.index[k] < 0) continue;\n        const auto pack =",
        "        const auto pack =",
        "AddressSanitizer",
    ),
    Mutant(
        "right/bottom corners always inside",
        "msda_sampling.h",
        "const bool x1_in = x0 + 1 <= width - 1;",
        "const bool x1_in = true;",
        "AddressSanitizer",
    ),
    Mutant(
        "shuffles for groups of 64",
        "cuda/kernels.cuh",
        "return groups <= kWarp && (groups & (groups - 1)) == 0;",
        "return groups <= 64 && (groups & (groups - 1)) == 0;",
        "width 64",
    ),
    Mutant(
        "+= instead of atomicAdd",
        "cuda/kernels.cuh",
        "if constexpr (kScatterValue) atomicAdd(grad_v + at + j, coef * g[j]);",
        "if constexpr (kScatterValue) grad_v[at + j] += coef * g[j];",
        "ThreadSanitizer: data race",
        sanitizer="thread",
    ),
    Mutant(
        "NaN locations skipped",
        "msda_sampling.h",
        "return (x != x || y != y) ? Sample::nan : Sample::outside;",
        "return Sample::outside;",
        "expected nan",
    ),
    Mutant(
        "group sum misses half the lanes",
        "cuda/kernels.cuh",
        "for (int offset = width / 2; offset > 0; offset /= 2) {",
        "for (int offset = width / 4; offset > 0; offset /= 2) {",
        "CUDA-EMU ERROR",
    ),
    Mutant(
        "deterministic gather bands overlap",
        "cuda/kernels.cuh",
        "hi = pixels * (band + 1) / bands;",
        "hi = pixels * (band + 2) / bands;",
        "deterministic grad_value",
    ),
    Mutant(
        "per-sample gradients drop the last channel",
        "cuda/kernels.cuh",
        "for (int64_t d = 0; d < a.channels; ++d) {",
        "for (int64_t d = 0; d + 1 < a.channels; ++d) {",
        "deterministic grad_",
    ),
    Mutant(
        "infinite weight folded into the corner weights",
        "cuda/kernels.cuh",
        "if (!is_finite(attn)) {  // the reference's order",
        "if (false) {  // the reference's order",
        "output",
    ),
    Mutant(
        "location gradient of an infinite weight left to arithmetic",
        "msda_sampling.h",
        "return is_finite(attn) ? attn * grad : attn - attn;",
        "return attn * grad;",
        "grad_locations",
    ),
    Mutant(
        "softmax gradient without the mean term",
        "msda_sampling.h",
        "grad[i] = softmax(logits[i]) * (grad[i] - dot);",
        "grad[i] = softmax(logits[i]) * grad[i];",
        "grad_weights",
    ),
]


def apply(mutant: Mutant, out: Path) -> Path:
    """A copy of csrc with ``mutant`` applied; the pattern must occur exactly once."""
    csrc = out / "csrc"
    shutil.rmtree(csrc, ignore_errors=True)
    shutil.copytree(CSRC, csrc)
    path = csrc / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: pattern found {count} times in {mutant.file}")
    path.write_text(text.replace(mutant.old, mutant.new))
    return csrc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutants whose name contains this")
    args = parser.parse_args(argv)
    survivors = []
    for mutant in MUTANTS:
        if args.only and args.only not in mutant.name:
            continue
        out = (
            ROOT
            / "build"
            / "cuda-emu"
            / "mutants"
            / mutant.name.replace(" ", "-").replace("/", "-")
        )
        csrc = apply(mutant, out)
        binary = build(mutant.sanitizer, csrc, out)
        started = time.monotonic()
        command = [str(binary)] + (["--quick"] if mutant.sanitizer == "thread" else [])
        proc = subprocess.run(
            command, env=environment(mutant.sanitizer), capture_output=True, text=True
        )
        output = proc.stdout + proc.stderr
        caught = proc.returncode != 0 and mutant.expect in output
        first = next((line for line in output.splitlines() if mutant.expect in line), "")
        verdict = "caught" if caught else "SURVIVED"
        print(
            f"{verdict:8} {mutant.name} ({mutant.sanitizer}, exit {proc.returncode}, "
            f"{time.monotonic() - started:.1f} s): {first.strip()[:150]}",
            flush=True,
        )
        if not caught:
            survivors.append(mutant.name)
            print(output[-3000:], file=sys.stderr)
    if survivors:
        print(f"{len(survivors)} mutant(s) survived: {survivors}", file=sys.stderr)
        return 1
    print("all mutants caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
