"""A portable, counter-based random number generator shared by the runtime and the demo apps.

SplitMix64 over (seed, stream, counter): the n-th number of a stream depends only on those three
integers, so Kotlin and Swift reproduce it bit for bit with 64-bit wrapping arithmetic. Gaussians
come from Box-Muller in float64, rounded to float32 at the end.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1

STREAM_TOKENS = 1
STREAM_NOISE = 2


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Finaliser of SplitMix64 applied elementwise to uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class PortableRng:
    """Deterministic stream of uniforms and normals; state is just ``counter``."""

    def __init__(self, seed: int, stream: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        mixed = (seed * 0x100000001B3 + stream * 0xD6E8FEB86659FD93) & _MASK
        self.key = int(splitmix64(np.array([mixed], dtype=np.uint64))[0])
        self.counter = 0

    def next_u64(self, n: int) -> np.ndarray:
        idx = np.arange(self.counter, self.counter + n, dtype=np.uint64)
        self.counter += n
        with np.errstate(over="ignore"):
            return splitmix64(idx * _GOLDEN + np.uint64(self.key))

    def uniform(self, n: int) -> np.ndarray:
        """n float64 values in [0, 1) with 53 random bits each."""
        return (self.next_u64(n) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def normal(self, n: int) -> np.ndarray:
        """n float32 standard normals (Box-Muller, both outputs of each pair used)."""
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs).reshape(pairs, 2)
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 0]))
        theta = 2.0 * np.pi * u[:, 1]
        out = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1).reshape(-1)
        return out[:n].astype(np.float32)
