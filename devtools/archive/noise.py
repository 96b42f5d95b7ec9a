"""Deterministic random fields that are pure functions of map coordinates.

Every value the generator makes depends only on (key, x, y) of a pixel centre, never on the
window it is computed in, so the truth recomputed for a small box equals, bit for bit, what was
written for a large one. That rules out neighbourhood operations and transcendental functions on
pixel arrays (numpy's SIMD and scalar paths may round them differently): fields are built from
integer hashes, `+`, `*` and `floor` only.

Coordinates come as two 1-D arrays (pixel-centre x of each column, y of each row); a field is
their outer product in shape (rows, columns).
"""

from __future__ import annotations

from typing import Any

import numexpr
import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Field = npt.NDArray[np.float32]

_MIX_X = np.uint64(0x9E3779B97F4A7C15)
_MIX_Y = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)
_TO_UNIT = 1.0 / float(1 << 24)


def evaluate(expression: str, /, **operands: Any) -> np.ndarray:
    """numexpr over explicit operands: one fused, multi-threaded pass instead of one per operator.

    Element-wise IEEE arithmetic as numpy does it, so results are the same whatever the array's
    shape or the number of threads. Pass float constants as np.float32 operands to stay float32.
    """
    result: np.ndarray = numexpr.evaluate(expression, local_dict=operands)
    return result


def stable_key(*parts: int | str) -> int:
    """A 64-bit key from labelled parts, stable across processes (unlike `hash`)."""
    value = 0xCBF29CE484222325
    for part in parts:
        for byte in str(part).encode() + b"\x1f":
            value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def hash_unit(column: npt.NDArray[np.int64], row: npt.NDArray[np.int64], key: int) -> Field:
    """Uniform [0, 1) for integer lattice points, broadcast as `row[:, None]` x `column`."""
    with np.errstate(over="ignore"):
        mixed = (column.astype(np.uint64)[None, :] * _MIX_X) ^ (
            row.astype(np.uint64)[:, None] * _MIX_Y
        )
        mixed ^= np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        mixed ^= mixed >> _SHIFT
        mixed *= _MIX_1
        mixed ^= mixed >> _SHIFT
        mixed *= _MIX_2
        mixed ^= mixed >> _SHIFT
    return ((mixed >> np.uint64(40)).astype(np.float32) * np.float32(_TO_UNIT)).astype(np.float32)


def _cell_positions(coordinates: Floats, cell: float) -> tuple[npt.NDArray[np.int64], Field]:
    """Lattice index left of each coordinate and the smoothed fraction to the next one."""
    scaled = coordinates / cell
    index = np.floor(scaled)
    fraction = (scaled - index).astype(np.float32)
    # Smoothstep hides the lattice's straight edges without any transcendental function.
    fraction = fraction * fraction * (np.float32(3.0) - np.float32(2.0) * fraction)
    return index.astype(np.int64), fraction


def value_noise(
    xs: Floats, ys: Floats, cell: float, key: int, amplitude: float = 1.0, out: Field | None = None
) -> Field:
    """Smooth noise in [0, amplitude) with features about `cell` map units across.

    With `out`, the noise is added to it (fractal sums without temporaries).
    """
    column, fx = _cell_positions(xs, cell)
    row, fy = _cell_positions(ys, cell)
    first_column, first_row = int(column.min()), int(row.min())
    lattice = hash_unit(
        np.arange(first_column, int(column.max()) + 2, dtype=np.int64),
        np.arange(first_row, int(row.max()) + 2, dtype=np.int64),
        key,
    )
    if amplitude != 1.0:
        lattice *= np.float32(amplitude)
    left = column - first_column
    # Interpolate along x for every lattice row (small), then along y as
    # top + fy * (bottom - top), one outer product per run of rows between two lattice rows.
    along_x = lattice[:, left] * (np.float32(1.0) - fx) + lattice[:, left + 1] * fx
    step = along_x[1:] - along_x[:-1]
    top = row - first_row
    if out is None:
        out = np.zeros((ys.size, xs.size), dtype=np.float32)
    starts = np.flatnonzero(np.diff(top, prepend=top[0] - 1))
    ends = np.append(starts[1:], top.size)
    scratch = np.empty((int((ends - starts).max()), xs.size), np.float32)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        lattice_row = int(top[start])
        block = scratch[: end - start]
        np.multiply(fy[start:end, None], step[lattice_row][None, :], out=block)
        block += along_x[lattice_row][None, :]
        out[start:end] += block
    return out


def fractal_noise(
    xs: Floats, ys: Floats, cell: float, key: int, octaves: int = 4, persistence: float = 0.5
) -> Field:
    """Sum of `octaves` value noises, each half the size of the last, scaled back into [0, 1)."""
    norm = sum(persistence**octave for octave in range(octaves))
    total = np.zeros((ys.size, xs.size), dtype=np.float32)
    for octave in range(octaves):
        amplitude = persistence**octave / norm
        value_noise(xs, ys, cell / (1 << octave), key + octave * 7919, amplitude, out=total)
    return total


def pixel_noise(xs: Floats, ys: Floats, resolution: float, key: int) -> Field:
    """Uniform [0, 1) per pixel of a `resolution` grid, for sensor noise and texture.

    (column hash + row hash) mod 1: uniform, uncorrelated between neighbours, and one cheap
    pass where a full 2-D hash would cost ten.
    """
    column = np.floor(xs / resolution).astype(np.int64)
    row = np.floor(ys / resolution).astype(np.int64)
    across = hash_unit(column, np.zeros(1, np.int64), key)
    down = hash_unit(np.zeros(1, np.int64), row, key ^ 0x5BD1E995)
    total = np.add(down.reshape(-1, 1), across.reshape(1, -1), dtype=np.float32)
    total -= total >= np.float32(1.0)
    return total


def unit_scalar(*parts: int | str) -> float:
    """One uniform [0, 1) number for a labelled draw (per date, per scene)."""
    return (stable_key(*parts) >> 11) / float(1 << 53)
