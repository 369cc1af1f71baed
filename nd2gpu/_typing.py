"""Type aliases of nd2gpu's public API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np

#: A CuPy array on a GPU (a ``SimulatedDeviceArray`` under numba's CUDA
#: simulator). CuPy is optional, so the alias cannot name its type.
DeviceArray: TypeAlias = Any
#: What decoding returns: NumPy on the CPU, a device array on "cuda".
Array: TypeAlias = np.ndarray | DeviceArray
#: Frames as nd2 users index them: one index, a slice or range, a sequence of
#: indices, or an integer or boolean array.
FrameIndex: TypeAlias = int | slice | range | Sequence[int] | np.ndarray
#: Intensity images for object tables: an array of the frames' images (NumPy or
#: a device array), or a channel of the file by index or name.
Intensity: TypeAlias = np.ndarray | DeviceArray | int | str
#: A resolved device: where arrays are made.
Device: TypeAlias = Literal["cpu", "cuda"]
#: A device as users ask for it ("auto": CUDA where usable, else the CPU).
DeviceRequest: TypeAlias = Literal["auto", "cpu", "cuda"]
