"""DeepYeast's napari plugin (``pip install deepyeast[napari]``; manifest ``napari.yaml``).

* :mod:`deepyeast.napari.widget`: the *Classify cells* widget: an image layer (two channels, or a
  marker and a protein layer), a model bundle folder and the channel order in; it segments the
  marker (or takes a Labels layer), classifies every cell with the bundle and adds a Labels layer
  whose ``features`` hold each cell's class, probabilities and out-of-distribution flag (where
  the bundle has the statistics), coloured by class, and a table of
  the protein's call.  Bad input is a napari notification with the command's one-line message.
* :mod:`deepyeast.napari.reader`: opens the micrograph files the command reads (TIFF, OME-TIFF,
  ImageJ hyperstacks, PNG), one image layer per channel.
* :mod:`deepyeast.napari.layers`: the widget's work without Qt (layer data in, layer data out),
  on the same functions as ``deepyeast classify`` (:func:`deepyeast.analysis.classify_screen.classify_micrograph`).

Importing this package imports neither napari nor Qt.
"""
