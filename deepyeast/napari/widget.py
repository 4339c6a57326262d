"""The napari widget *Classify cells* (npe2 command ``deepyeast.classify_cells``).

Takes an image layer (two channels, or the marker with a second, protein layer), optionally a
Labels layer of cells (else the marker is segmented as ``deepyeast segment`` does), a model bundle
folder and the channel order; adds a Labels layer ``<image> cells`` whose ``features`` hold each
cell's class and probabilities, coloured by class, and docks a table of the protein's call (also in
the layer's ``metadata["protein_call"]``).  Bad input shows a napari error notification with the
one-line message ``deepyeast classify`` prints, and changes nothing.  The work itself is
:mod:`deepyeast.napari.layers` (no Qt).
"""

from pathlib import Path
from typing import Optional

import napari
from magicgui import magic_factory
from napari.utils.notifications import show_error, show_info

from deepyeast.napari.layers import cells_layer, load_bundle, micrograph_from_layers
from deepyeast.utils.io import InputError

__all__ = ["classify_cells_widget", "classify_cells", "CALL_DOCK"]

CALL_DOCK = "DeepYeast protein call"
"""Name of the docked table of the protein's call."""


def classify_cells(viewer, image, protein=None, cells=None, bundle="", marker_channel=0, protein_channel=1, bits=0):
    """The widget's action (see the module doc); returns the added Labels layer, or None after bad input.

    ``image``, ``protein``: napari Image layers (``protein`` None: ``image`` holds both channels,
    ``marker_channel`` and ``protein_channel`` index them); ``cells``: a Labels layer or None;
    ``bundle``: the model bundle folder; ``bits``: bit depth of 16-bit data (0: 8-bit data).
    """
    from deepyeast.data.micrographs import MicrographFormat

    try:
        micrograph = micrograph_from_layers(
            _pixels(image), None if protein is None else _pixels(protein),
            MicrographFormat((marker_channel, protein_channel), bits or None), rgb=bool(getattr(image, "rgb", False)),
            names=(image.name, "protein" if protein is None else protein.name))
        model, predictor = load_bundle(bundle)
        result = cells_layer(model, micrograph, None if cells is None else _pixels(cells), predictor, name=image.name)
    except InputError as err:
        show_error(str(err))
        return None
    layer = viewer.add_labels(result.data, name=f"{image.name} cells", features=result.features,
                              colormap=_colormap(result.colors), opacity=0.6,
                              metadata={"protein_call": result.call, "classes": result.classes,
                                        "bundle": str(bundle)})
    _show_call(viewer, image.name, result.call)
    call = result.call
    show_info(f"{len(result.features['index'])} cells; call: {call['class']} (share {call['top1_share']:.2f}, "
              f"p_call {call['p_call']:.2f})" if call["class"] else f"{image.name}: no cell found")
    return layer


def _pixels(layer):
    """A layer's full-resolution array (the first level of a multiscale image)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _colormap(colors):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), **colors})


def _show_call(viewer, name, call):
    """Dock (or refresh) the table of the protein's call: one row per field."""
    from magicgui.widgets import Table

    rows = {"field": ["micrograph"] + list(call), "value": [name] + [_text(v) for v in call.values()]}
    docks = getattr(viewer.window, "_dock_widgets", {})
    if CALL_DOCK in docks:
        viewer.window.remove_dock_widget(docks[CALL_DOCK])
    viewer.window.add_dock_widget(Table(value=rows), name=CALL_DOCK, area="right")


def _text(value):
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


@magic_factory(call_button="Classify",
               image={"label": "image (2 channels, or the marker)"},
               protein={"label": "protein layer (optional)"},
               cells={"label": "cells (optional Labels)"},
               bundle={"mode": "d", "label": "model bundle folder"},
               marker_channel={"min": 0, "max": 63},
               protein_channel={"min": 0, "max": 63},
               bits={"min": 0, "max": 16, "tooltip": "bit depth of 16-bit data, e.g. 12 (0: 8-bit data)"})
def classify_cells_widget(viewer: napari.Viewer, image: napari.layers.Image,
                          protein: Optional[napari.layers.Image] = None, cells: Optional[napari.layers.Labels] = None,
                          bundle: Path = Path(""), marker_channel: int = 0, protein_channel: int = 1,
                          bits: int = 0) -> None:
    """Classify the cells of a micrograph with a DeepYeast model bundle."""
    classify_cells(viewer, image, protein, cells, bundle, marker_channel, protein_channel, bits)
