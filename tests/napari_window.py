"""Open an ND2 file in a real napari window and take screenshots (tests/test_napari.py).

Run as ``python napari_window.py FILE OUT_DIR`` on an X display. Writes
``canvas.npy`` (the canvas, RGBA), ``window.png`` (the whole window) and
``view.json`` (the canvas size, the camera's centre and zoom, the layers'
opacities), from which the test maps data pixels to canvas pixels.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np


def main(path: str, out: str) -> None:
    warnings.simplefilter("ignore")  # napari's own deprecations are not ours
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari: cells.nd2")
    viewer.window.resize(1000, 640)
    viewer.open(path, plugin="nd2gpu")
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    viewer.screenshot(str(Path(out) / "window.png"), canvas_only=False, flash=False)
    np.save(Path(out) / "canvas.npy", canvas)
    view = {
        "shape": list(canvas.shape),
        "center": list(viewer.camera.center),
        "zoom": viewer.camera.zoom,
        "opacity": {layer.name: layer.opacity for layer in viewer.layers},
        "layers": [type(layer).__name__ for layer in viewer.layers],
    }
    (Path(out) / "view.json").write_text(json.dumps(view))
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
