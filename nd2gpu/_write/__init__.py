"""Everything nd2gpu writes: ND2 files, OME-Zarr and OME-TIFF exports.

- ``atomic``: outputs staged beside their destination and moved into place;
- ``interrupts``: Ctrl-C and SIGTERM never cut cleanup or a commit short;
- ``nd2_writer``: ``write_nd2``, ND2 files that nd2 reads back exactly;
- ``outputs``: ``check_output``, the outputs an export refuses (never an input);
- ``export``: ``export`` (``nd2gpu.export``), binary layers as OME-Zarr
  (``ome_zarr``, through nd2's writer, with ``label_metadata``; its threads in
  ``zarr_writers``) or OME-TIFF (``ome_tiff``).
"""
