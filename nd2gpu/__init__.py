"""nd2gpu: decode the binary layers of Nikon ND2 files into GPU or NumPy arrays.

Bit-identical to the reference reader ``nd2``, orders of magnitude faster. A
drop-in for ``nd2``: its public names are here too, and ``nd2gpu.ND2File`` is an
``nd2.ND2File`` whose ``binary_data`` decodes lazily, in parallel, on the CPU or
the GPU.

Examples
--------
>>> import numpy as np, nd2gpu  # doctest: +SKIP
>>> with nd2gpu.ND2File("cells.nd2") as f:
...     masks = np.asarray(f.binary_data)  # (n_layers, *coords, Y, X) uint16
"""

import importlib.metadata as _metadata
import typing as _std_typing  # not _typing: that is nd2gpu._typing

from nd2 import AXIS, imread, is_legacy, is_supported_file, rescue_nd2, structures

from ._backends.cpu import decode_binary_mask
from ._dataset import FrameDataset
from ._errors import DecodeError, DeviceUnavailableError
from ._layers import BinaryLayer, BinaryLayers
from ._nd2file import ND2File
from ._regionprops_dask import regionprops_dask
from ._write.export import export
from ._write.nd2_writer import write_nd2

try:
    __version__ = _metadata.version("nd2gpu")
except _metadata.PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "unknown"

__all__ = [
    "AXIS",
    "BinaryLayer",
    "BinaryLayers",
    "DecodeError",
    "DeviceUnavailableError",
    "FrameDataset",
    "ND2File",
    "__version__",
    "decode_binary_mask",
    "export",
    "imread",
    "is_legacy",
    "is_supported_file",
    "nd2_to_tiff",
    "regionprops_dask",
    "rescue_nd2",
    "structures",
    "write_nd2",
]


if _std_typing.TYPE_CHECKING:
    from nd2 import nd2_to_tiff
else:

    def __getattr__(name: str) -> object:
        if name == "nd2_to_tiff":  # imported on use: it needs tifffile, as in nd2
            import nd2

            return nd2.nd2_to_tiff
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
