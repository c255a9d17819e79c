"""melody-edge: MeLoDy music generation in PyTorch and on device."""

__version__ = "0.1.0"
