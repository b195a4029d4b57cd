"""imbaseg: class-imbalanced binary medical image segmentation, from download to figures."""

__version__ = "0.1.0"
