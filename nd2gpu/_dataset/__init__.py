"""Training datasets: images and binary-layer masks of an ND2 file's frames.

- ``info``: what a dataset knows of its file (layout, channels, loops, layers);
- ``images``: image frames read from their chunks into a batch;
- ``masks``: the masks of a batch, every layer in one decode call;
- ``dataset``: ``FrameDataset``, the façade.
"""

from .dataset import FrameDataset

__all__ = ["FrameDataset"]
