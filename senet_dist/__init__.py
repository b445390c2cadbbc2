"""senet-dist: distributed training of Squeeze-and-Excitation image classifiers."""

__version__ = "0.1.0"
