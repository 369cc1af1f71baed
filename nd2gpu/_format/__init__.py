"""The ND2 file format as nd2gpu reads and writes it.

- ``container``: chunk headers, signatures and chunk names,
- ``chunk_index``: the chunk map of a file and bounded reads of its chunks,
- ``mask_stream``: the layout of one frame's binary-layer (mask) stream,
- ``mask_encode``: label images -> mask streams (the writer's encoder),
- ``clx_lite``: Python values -> "CLX lite" metadata records,
- ``layer_metadata``: the ``BinaryMetadata_v1`` chunk -> one record per layer.
- ``image_frames``: where an image frame's pixels lie and how they are laid out.

``docs/format.md`` describes the bytes.
"""
