"""ExecuTorch XNNPACK export of the tiny model behind the parity gate: fp32 and int8 (int4 in its own file)."""

from __future__ import annotations

import pytest
from xnnpack_gate import check_xnnpack_bundle


@pytest.mark.parametrize("recipe", ["fp32", "int8"])
def test_xnnpack_bundle_passes_gate(bundle_factory, recipe):
    check_xnnpack_bundle(bundle_factory("executorch-xnnpack", recipe), recipe)
