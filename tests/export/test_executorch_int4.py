"""ExecuTorch XNNPACK int4 (8da4w) export of the tiny model behind the parity gate.

Its own file so that pytest-xdist (one file per worker) lowers it beside the int8 export, not after it.
"""

from __future__ import annotations

from xnnpack_gate import check_xnnpack_bundle


def test_xnnpack_int4_bundle_passes_gate(bundle_factory):
    check_xnnpack_bundle(bundle_factory("executorch-xnnpack", "int4"), "int4")
