"""Which semantic tokenizers a checkpoint can hold, and how to build or load one from its config.

A checkpoint's ``tokenizer`` section carries a ``kind``: ``kmeans`` (the built-in log-mel tokenizer; also
what a section without ``kind`` means) or ``encoder`` (k-means over a local learned encoder such as MERT).
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CONFIG_FILE, CheckpointError, load_component, read_json
from .config import ConfigError, config_kind
from .encoder_tokenizer import EncoderSemanticTokenizer, EncoderTokenizerConfig
from .semantic_tokenizer import CentroidTokenizer, KMeansSemanticTokenizer, KMeansTokenizerConfig

TokenizerConfig = KMeansTokenizerConfig | EncoderTokenizerConfig
TOKENIZER_KINDS: dict[str, tuple[type, type[CentroidTokenizer]]] = {
    config_kind(KMeansTokenizerConfig): (KMeansTokenizerConfig, KMeansSemanticTokenizer),
    config_kind(EncoderTokenizerConfig): (EncoderTokenizerConfig, EncoderSemanticTokenizer),
}


def build_tokenizer(config: TokenizerConfig) -> CentroidTokenizer:
    """An unfitted tokenizer of the config's kind (random centroids until ``fit``)."""
    for config_cls, build in TOKENIZER_KINDS.values():
        if type(config) is config_cls:
            return build(config)
    raise ConfigError(f"tokenizer: no tokenizer is built from a {type(config).__name__}")


def tokenizer_config_class(directory: str | Path) -> type:
    """The config class that ``DIR/config.json`` was written from, by its ``kind`` (default ``kmeans``)."""
    raw = read_json(Path(directory) / CONFIG_FILE)
    kind = raw.get("kind", config_kind(KMeansTokenizerConfig)) if isinstance(raw, dict) else None
    if kind not in TOKENIZER_KINDS:
        raise CheckpointError(
            f"{Path(directory) / CONFIG_FILE}: unknown tokenizer kind {kind!r}; "
            f"this version reads {', '.join(sorted(TOKENIZER_KINDS))}"
        )
    return TOKENIZER_KINDS[kind][0]


def load_tokenizer_component(directory: str | Path) -> tuple[TokenizerConfig, CentroidTokenizer]:
    """A saved tokenizer of any kind (its encoder, if any, is loaded only when audio is tokenized)."""
    config_cls = tokenizer_config_class(directory)
    return load_component(directory, config_cls, TOKENIZER_KINDS[config_kind(config_cls)][1])
