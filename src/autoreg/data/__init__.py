"""Datasets: in-memory uint8 splits from torchvision files, a download, or bundled MNIST."""
from autoreg.data.datamodule import IMAGE_SHAPES, ImageDataModule
from autoreg.data.sources import load_splits

__all__ = ["IMAGE_SHAPES", "ImageDataModule", "load_splits"]
