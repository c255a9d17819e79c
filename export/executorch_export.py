"""ExecuTorch: ``torch.export`` -> edge -> delegate -> ``.pte``.

XNNPACK here (``executorch-xnnpack``); the same lowering takes the Core ML partitioner for
``executorch-coreml``. The LM becomes one program with ``prefill`` and ``decode`` methods that
share the KV cache as initialised mutable buffers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.export import ExportedProgram, export

from .adapters import MethodSpec


def _partitioners(target: str) -> list:
    if target == "executorch-xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    if target == "executorch-coreml":
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        return [CoreMLPartitioner()]
    raise ValueError(f"not an ExecuTorch target: {target}")


def export_program(module: nn.Module, spec: MethodSpec) -> ExportedProgram:
    """Static-shape ``torch.export`` of one method (no grad, strict=False)."""
    module = module.eval().requires_grad_(False)
    with torch.no_grad():
        return export(module, spec.examples(), strict=False)


def lower_to_pte(
    programs: dict[str, ExportedProgram],
    target: str,
    path: Path,
    shared_state: tuple[str, ...] = (),
    partitioners: list | None = None,
) -> int:
    """Lower ``programs`` (method name -> program) into one ``.pte`` at ``path``; returns its size.

    ``shared_state`` names buffers (substrings) that every method reads and writes: they are memory
    planned once and initialised from the exported values (zeros for a KV cache), so a method never
    reads an uninitialised slot.
    """
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

    passes = [InitializedMutableBufferPass(list(shared_state))] if shared_state else []
    config = ExecutorchBackendConfig(
        memory_planning_pass=MemoryPlanningPass(share_mutable_buffers=bool(shared_state)),
        emit_mutable_buffer_names=bool(shared_state),
        # The KV cache update (index_copy_ -> functional index_put) otherwise copies the whole cache
        # into a new tensor and back into the buffer, twice per layer per decode step (ETDump profile,
        # docs/benchmarks.md); reinplaced, it writes only the new position.
        run_reinplace_pass=True,
    )
    with warnings.catch_warnings():
        # ExecuTorch's passes deep-copy programs through a torch pytree path that warns once per copy
        # (a dozen times per bundle) about its own deprecated LeafSpec check: nothing a user can act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        if shared_state:  # InitializedMutableBufferPass above is what this warning asks for; it warns anyway
            warnings.filterwarnings("ignore", message="Mutation on a buffer in the model is detected")
        # The edge-dialect dtype verifier re-runs after every pass and dominated lowering time (about half);
        # the parity gate checks the lowered program end to end instead, as ExecuTorch's LLM exporter does.
        edge = to_edge_transform_and_lower(
            programs,
            partitioner=partitioners if partitioners is not None else _partitioners(target),
            transform_passes=passes,
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
        )
        program = edge.to_executorch(config)
    data = program.buffer
    path.write_bytes(data)
    return len(data)


def export_component(
    methods: dict[str, tuple[nn.Module, MethodSpec]],
    target: str,
    path: Path,
    shared_state: tuple[str, ...] = (),
    partitioners: list | None = None,
) -> int:
    programs = {name: export_program(module, spec) for name, (module, spec) in methods.items()}
    return lower_to_pte(programs, target, path, shared_state, partitioners)
