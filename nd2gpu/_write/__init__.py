"""Everything nd2gpu writes: ND2 files, OME-Zarr and OME-TIFF exports.

- ``atomic``: outputs staged beside their destination and moved into place;
- ``nd2_writer``: ``write_nd2``, ND2 files that nd2 reads back exactly;
- ``export``: binary layers as OME-Zarr (through nd2) or OME-TIFF.
"""
