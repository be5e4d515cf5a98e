"""gantune: search GAN augmentation pipelines for small medical image datasets."""

__version__ = "0.1.0"
