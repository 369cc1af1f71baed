"""Numba kernels of nd2gpu (installed as ``nd2gpu.kernels``)."""
