"""Reading what LLVM made of a kernel: its assembly, its hottest loop, and counts of the
instructions that decide speed there (packed FMAs and their register width, broadcasts, vector
loads, gathers, and stack traffic, which in a micro-kernel's loop means spilled accumulators).

The tests use these to check the micro-kernels; `peak.kernel_vector_bits` uses them to report the
vector width in use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_REG_BITS = {"zmm": 512, "ymm": 256, "xmm": 128}
_LABEL = re.compile(r"^(\.?L\w+):")
_JUMP = re.compile(r"^\s*j\w+\s+(\.?L\w+)\s*$")
_PACKED_FMA = re.compile(r"^\s*vf(?:n)?m(?:add|sub)\w*p[sd]\s+.*%([xyz]mm)\d+\s*$")
_STACK = re.compile(r"\((?:%rsp|%rbp)[,)]")


def fresh_asm(fn, *args) -> str:
    """The assembly of Numba dispatcher fn compiled for args' types, from a new compilation:
    Numba keeps no assembly for a kernel it loaded from its cache."""
    import numba  # heavy: importing convbench.kernels must not load it
    opts = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**opts)(fn.py_func)
    fresh.compile(tuple(numba.typeof(a) for a in args))
    return "".join(fresh.inspect_asm().values())


def _code_lines(asm: str) -> list[str]:
    """Instructions and labels, without directives and comments."""
    out = []
    for line in asm.splitlines():
        line = line.split("#", 1)[0].rstrip()
        stripped = line.strip()
        if not stripped or (stripped.startswith(".") and not _LABEL.match(stripped)):
            continue
        out.append(line)
    return out


def loops(asm: str) -> list[list[str]]:
    """Every loop as the lines from a label to the last backward jump to it, innermost first
    (shortest first)."""
    lines = _code_lines(asm)
    where = {}
    found = []
    for i, line in enumerate(lines):
        m = _LABEL.match(line.strip())
        if m:
            where[m.group(1)] = i
            continue
        j = _JUMP.match(line)
        if j and j.group(1) in where and where[j.group(1)] < i:
            found.append(lines[where[j.group(1)]:i + 1])
    return sorted(found, key=len)


def hot_loop(asm: str) -> list[str]:
    """The innermost loop that contains packed FMAs (the micro-kernel's k loop); [] if none."""
    for body in loops(asm):
        if any(_PACKED_FMA.match(line) for line in body):
            return body
    return []


@dataclass(frozen=True)
class LoopStats:
    """Instruction counts in one loop body."""
    instructions: int
    fma: dict          # packed FMAs by register width in bits
    broadcasts: int
    vector_loads: int  # vmovups/vmovaps/vmovupd/vmovapd that load into a register
    gathers: int
    stack_accesses: int  # memory operands on %rsp or %rbp

    @property
    def fma_bits(self) -> int:
        """The widest register width of the packed FMAs (0 if none)."""
        return max(self.fma, default=0)


def loop_stats(body: list[str]) -> LoopStats:
    fma: dict = {}
    broadcasts = loads = gathers = stack = instructions = 0
    for line in body:
        s = line.strip()
        if _LABEL.match(s):
            continue
        instructions += 1
        m = _PACKED_FMA.match(line)
        if m:
            bits = _REG_BITS[m.group(1)]
            fma[bits] = fma.get(bits, 0) + 1
        op = s.split(None, 1)[0]
        if op.startswith(("vbroadcast", "vpbroadcast")) or "{1to" in s:
            broadcasts += 1
        if re.match(r"vmov[au]p[sd]$", op) and re.search(r"\)\s*,\s*%[xyz]mm\d+$", s):
            loads += 1
        if "gather" in op or "scatter" in op:
            gathers += 1
        if _STACK.search(s):
            stack += 1
    return LoopStats(instructions, fma, broadcasts, loads, gathers, stack)
