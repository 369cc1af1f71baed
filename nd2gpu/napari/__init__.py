"""The napari plugin ``nd2gpu``: ND2 files as image layers plus their binary layers.

Registered through the ``napari.manifest`` entry point (``napari.yaml`` beside
this file); ``pip install "nd2gpu[napari]"``, then ``napari cells.nd2``. Opening
an ND2 file gives

- one image layer per channel, lazily (nd2's dask array), named and coloured
  as the channel, scaled by the file's voxel size, axes in nd2's order;
- one Labels layer per binary layer, named as the layer, every label value in
  the layer's NIS-Elements colour, with the image's scale and leading axes,
  decoded a frame at a time as napari shows it (a corrupt frame is reported in
  napari's notifications and shown empty; the other frames still show).

Only nd2gpu's public API is used here, and nothing else in nd2gpu imports this
package (or napari).
"""

from ._reader import layer_data, napari_get_reader

__all__ = ["layer_data", "napari_get_reader"]
