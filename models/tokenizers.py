"""Which semantic tokenizers a checkpoint can hold, and how to build or load one from its config.

A checkpoint's ``tokenizer`` section carries a ``kind``: ``kmeans`` (the built-in log-mel tokenizer; also
what a section without ``kind`` means) or ``encoder`` (k-means over a local learned encoder such as MERT).
"""

from __future__ import annotations

import typing
from pathlib import Path

from .checkpoint import CONFIG_FILE, CheckpointError, load_component, read_json
from .config import ConfigError, config_class_by_kind
from .encoder_tokenizer import EncoderSemanticTokenizer, EncoderTokenizerConfig
from .semantic_tokenizer import CentroidTokenizer, KMeansSemanticTokenizer, KMeansTokenizerConfig

# The first is what a section without ``kind`` means.
TokenizerConfig = KMeansTokenizerConfig | EncoderTokenizerConfig
_MODULES: dict[type, type[CentroidTokenizer]] = {
    KMeansTokenizerConfig: KMeansSemanticTokenizer,
    EncoderTokenizerConfig: EncoderSemanticTokenizer,
}


def build_tokenizer(config: TokenizerConfig) -> CentroidTokenizer:
    """An unfitted tokenizer of the config's kind (random centroids until ``fit``)."""
    return _MODULES[type(config)](config)


def load_tokenizer_component(directory: str | Path) -> tuple[TokenizerConfig, CentroidTokenizer]:
    """A saved tokenizer of any kind, read by its config's ``kind`` (its encoder, if any, is loaded only
    when audio is tokenized)."""
    config_cls = tokenizer_config_class(directory)
    return load_component(directory, config_cls, _MODULES[config_cls])


def tokenizer_config_class(directory: str | Path) -> type:
    """The config class that ``DIR/config.json`` was written from (the same lookup as melody.json's)."""
    path = Path(directory) / CONFIG_FILE
    try:
        return config_class_by_kind(read_json(path), list(typing.get_args(TokenizerConfig)), "tokenizer")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
