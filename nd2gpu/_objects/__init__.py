"""Object tables (regionprops) of binary layers, computed from the mask runs.

``BinaryLayer.regionprops_table`` and ``BinaryLayers.regionprops_table`` land in
``table``. The table has the columns of ``skimage.measure.regionprops_table``
(and cuCIM's) for the dense label images nd2 would give, without building them:

- ``columns``: the properties, their columns and dtypes (skimage's);
- ``intensity``: intensity images, an array or a channel of the file;
- ``cpu``: each frame recorded as runs by the shared front half and reduced by
  id in ``kernels/_objects_kernels.py`` (numba, ``nogil``), frames in parallel;
- ``gpu``: the runs staged by the same front half and reduced by (frame, id) on
  the GPU (``nd2gpu/_backends/cuda/objects.py``);
- ``dask``: ``regionprops_dask``, tables of whole files on a dask cluster.
"""

from __future__ import annotations

from .columns import (
    DEFAULT_PROPERTIES,
    INTENSITY_PROPERTIES,
    PROPERTIES,
    PROPERTY_COLUMNS,
    check_properties,
    check_spacing,
    column_dtype,
    table_columns,
)
from .table import regionprops_table

__all__ = [
    "DEFAULT_PROPERTIES",
    "INTENSITY_PROPERTIES",
    "PROPERTIES",
    "PROPERTY_COLUMNS",
    "check_properties",
    "check_spacing",
    "column_dtype",
    "regionprops_table",
    "table_columns",
]
