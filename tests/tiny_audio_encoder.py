"""A tiny audio encoder in the Hugging Face format, built here (MERT and w2v-BERT cannot be downloaded).

Its own module, not conftest.py: tests import it by name, and several conftest.py files share that name.
"""

from __future__ import annotations

import torch


def save_tiny_audio_encoder(directory, seed: int = 0):
    """A randomly initialised 2-layer wav2vec 2.0 (16 kHz in, 50 Hz frames, 32 wide) saved as a Hugging Face
    model directory: the stand-in for MERT / w2v-BERT, which cannot be downloaded here."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 8, 8),  # 320 samples per frame: 50 Hz at 16 kHz, as wav2vec 2.0 and HuBERT
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(seed)
    Wav2Vec2Model(config).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(directory)
    return directory
