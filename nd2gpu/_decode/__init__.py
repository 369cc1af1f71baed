"""The device-independent front half of decoding: bytes -> runs, shared by every
consumer (the CPU paint, the CUDA staging, the object tables).

- ``mask_source``: a file's chunk index, shared and reopened on demand;
- ``layer_ref``: a layer as plain data (what the stages receive);
- ``plan``: which frames one call reads and where each goes, and error context;
- ``payloads``: each frame's zlib stream as a buffer (views of the memory map);
- ``inflate``: zlib with the fastest inflater installed, capped per frame;
- ``frame``: a frame's header and the errors of its stream;
- ``front``: payloads inflated group by group and handed to a compiled consumer;
- ``runs``: a thread's run list, for the consumers that need runs;
- ``schedule``: job ranges over the decode threads, and the first failure;
- ``pool``: the process-wide decode threads.

The back ends (``nd2gpu._backends``) and the object tables (``nd2gpu._objects``)
take it from there.
"""
