"""A napari session driven like a user would (not a test module): run by tests/test_napari_plugin.py as
``xvfb-run python tests/_napari_session.py MICROGRAPH BUNDLE NOT_A_BUNDLE OUT``.

Opens the micrograph with the plugin's reader, docks the plugin's widget from its manifest, then
1. gives it one channel layer only (bad input), and a folder that is no bundle (bad input);
2. runs it on the two channel layers with the bundle;
and writes OUT/session.json (layers, the cells layer's features and metadata, the notifications,
the docked widgets) and OUT/screenshot.png (the canvas with the cells layer alone, opaque).
"""

import json
import os
import sys

import numpy as np


def main(micrograph, bundle, not_a_bundle, out):
    import napari
    from napari.utils.notifications import notification_manager
    from npe2 import PluginManager, PluginManifest

    manager = PluginManager.instance()
    if "deepyeast" not in manager._manifests:  # a checkout not installed: the manifest the wheel registers
        manifest = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deepyeast", "napari",
                                "napari.yaml")
        manager.register(PluginManifest.from_file(manifest))
    notes = []
    notification_manager.notification_ready.connect(lambda n: notes.append([str(n.severity), str(n.message)]))

    viewer = napari.Viewer(show=True)
    layers = viewer.open(micrograph, plugin="deepyeast")
    _, widget = viewer.window.add_plugin_dock_widget("deepyeast", "Classify cells")
    marker, protein = layers

    widget.image.value = marker
    widget.protein.value = None
    widget.bundle.value = bundle
    widget()                                     # one channel where two are needed
    after_one_channel = len(viewer.layers)
    widget.protein.value = protein
    widget.bundle.value = not_a_bundle
    widget()                                     # a folder that is no bundle
    after_no_bundle = len(viewer.layers)
    widget.bundle.value = bundle
    widget()                                     # good input
    cells = viewer.layers[-1]

    features = cells.features
    docks = sorted(getattr(viewer.window, "_dock_widgets", {}))
    marker.visible = protein.visible = False
    cells.opacity = 1.0
    viewer.reset_view()
    shot = viewer.screenshot(path=os.path.join(out, "screenshot.png"), canvas_only=True, flash=False)
    colour = {}
    for label in np.unique(cells.data):
        if label:
            colour[int(label)] = [float(c) for c in cells.colormap.map(np.array([label]))[0]]
    session = {
        "layers": [[layer.name, type(layer).__name__] for layer in viewer.layers],
        "reader_layers": [[layer.name, list(layer.data.shape), str(layer.data.dtype)] for layer in layers],
        "layers_after_bad_input": [after_one_channel, after_no_bundle],
        "features": {name: features[name].tolist() for name in features.columns},
        "labels_max": int(cells.data.max()), "labels_shape": list(cells.data.shape),
        "colour": colour,
        "metadata": {k: v for k, v in cells.metadata.items() if k in ("protein_call", "classes")},
        "notifications": notes,
        "docks": docks,
        "screenshot_shape": list(shot.shape),
    }
    with open(os.path.join(out, "session.json"), "w") as f:
        json.dump(session, f, indent=1, default=str)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
