"""nd2gpu: decode the binary layers of Nikon ND2 files into GPU or NumPy arrays.

Bit-identical to the reference reader ``nd2``, orders of magnitude faster.

Examples
--------
>>> import numpy as np, nd2gpu  # doctest: +SKIP
>>> with nd2gpu.ND2File("cells.nd2") as f:
...     masks = np.asarray(f.binary_data)  # (n_layers, *coords, Y, X) uint16
"""

from ._errors import DecodeError, DeviceUnavailableError
from ._frame_decode import decode_binary_mask
from ._layers import BinaryLayer, BinaryLayers
from ._nd2file import ND2File
from ._writer import write_nd2

__version__ = "0.1.0"

__all__ = [
    "BinaryLayer",
    "BinaryLayers",
    "DecodeError",
    "DeviceUnavailableError",
    "ND2File",
    "__version__",
    "decode_binary_mask",
    "write_nd2",
]
