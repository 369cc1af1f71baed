"""The device-independent front half of decoding: bytes -> run tables.

- ``mask_source``: which chunk holds each frame of a layer, and its payload,
- ``inflate``: zlib with the fastest inflater installed, capped per frame,
- ``frame``: one frame's header, validation and parse into runs,
- ``plan``: which frame goes where in an output block, and error context,
- ``pool``: the process-wide decode threads.

The back ends (``nd2gpu._backends``) take it from there.
"""
