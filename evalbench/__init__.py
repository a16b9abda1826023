"""evalbench: benchmark pretrained image encoders the way self-supervised learning papers do."""

__version__ = "0.1.0"
