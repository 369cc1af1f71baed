"""Exceptions raised by nd2gpu."""

from __future__ import annotations

import os


class DecodeError(ValueError):
    """Corrupt or hostile binary-layer data.

    The message names the file, layer, frame and byte offset where they are known.
    The same values are available as attributes for programs that handle the error.

    Attributes
    ----------
    path : str | None
        The file being decoded.
    layer : str | None
        The binary layer's name.
    frame : int | None
        The sequence (frame) index.
    offset : int | None
        Byte offset of the problem: in the inflated mask stream for stream errors,
        in the file for container errors (see ``where``).
    where : str
        What ``offset`` counts from: ``"stream"`` or ``"file"``.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | os.PathLike[str] | None = None,
        layer: str | None = None,
        frame: int | None = None,
        offset: int | None = None,
        where: str = "stream",
    ) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.layer = layer
        self.frame = frame
        self.offset = offset
        self.where = where
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"file {self.path!r}")
        if self.layer is not None:
            parts.append(f"layer {self.layer!r}")
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.offset is not None:
            unit = "inflated stream" if self.where == "stream" else "file"
            parts.append(f"byte {self.offset} of the {unit}")
        context = ", ".join(parts)
        return f"{self.reason} ({context})" if context else self.reason

    def with_context(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        layer: str | None = None,
        frame: int | None = None,
    ) -> DecodeError:
        """Return a copy with missing context filled in."""
        return DecodeError(
            self.reason,
            path=self.path if self.path is not None else path,
            layer=self.layer if self.layer is not None else layer,
            frame=self.frame if self.frame is not None else frame,
            offset=self.offset,
            where=self.where,
        )


class DeviceUnavailableError(RuntimeError):
    """The requested device ("cuda") cannot be used on this machine."""
