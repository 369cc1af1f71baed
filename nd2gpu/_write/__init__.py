"""Everything nd2gpu writes: ND2 files, OME-Zarr and OME-TIFF exports.

- ``atomic``: outputs staged beside their destination and moved into place;
- ``nd2_writer``: ``write_nd2``, ND2 files that nd2 reads back exactly;
- ``outputs``: ``check_output``, the outputs an export refuses (never an input);
- ``export``: ``export_labels``, binary layers as OME-Zarr (``ome_zarr``, through
  nd2's writer) or OME-TIFF (``ome_tiff``).
"""
