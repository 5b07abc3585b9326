"""vtdl: reproducible self-supervised video representation learning with VTDL."""

__version__ = "0.1.0"
