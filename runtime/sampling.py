"""Token sampling outside the network: temperature, top-k, and one portable uniform per token."""

from __future__ import annotations

import numpy as np


def sample_token(logits: np.ndarray, temperature: float, top_k: int, u: float) -> int:
    """Pick a token from logits [V] with the uniform ``u`` in [0, 1) (inverse-CDF sampling).

    Computed in float64 with a stable descending order (ties keep the lower index), so the apps'
    cores reproduce the same choice. ``temperature == 0`` means greedy; ``top_k == 0`` keeps all.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("LM logits contain NaN/Inf; the model or the exported program is broken")
    if temperature == 0:
        return int(np.argmax(x))
    order = np.argsort(-x, kind="stable")
    if 0 < top_k < x.size:
        order = order[:top_k]
    z = x[order] / temperature
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return int(order[min(idx, order.size - 1)])
