"""The built-in trained model: the `demo` checkpoint shipped inside the package (docs/model_card.md).

Every command that takes ``--checkpoint``/``--config`` uses it when given neither.
"""

from __future__ import annotations

from pathlib import Path

from melody_edge.models.checkpoint import CheckpointError

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "demo"


def default_checkpoint() -> Path:
    """The packaged demo checkpoint; a clear error when the installation lacks it."""
    if not (DEFAULT_CHECKPOINT / "melody.json").is_file():
        raise CheckpointError(
            f"the built-in demo checkpoint is missing from {DEFAULT_CHECKPOINT}; reinstall melody-edge "
            "(pip install -e .) or pass --checkpoint DIR or --config NAME"
        )
    return DEFAULT_CHECKPOINT


def resolve_source(checkpoint: Path | None, config_name: str | None) -> tuple[str | None, Path | None]:
    """(config_name, checkpoint) for ``load_model``: the packaged checkpoint when neither is given."""
    if checkpoint is None and config_name is None:
        return None, default_checkpoint()
    return config_name, checkpoint
