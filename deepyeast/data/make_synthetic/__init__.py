"""A synthetic yeast screen: whole micrographs rendered per protein, cropped like real data.

Why: the real DeepYeast archive cannot be downloaded everywhere, yet every step
of the project must run end to end.  This module renders fields of budding
yeast cells (default 512 x 512 pixels) the way a high-content screen images
them, then sends them through the crop step of :mod:`deepyeast.data.crop_cells`, so the
output is an archive root in the published layout.

The package: :mod:`.plan` (classes, splits and cells per protein), :mod:`.patterns` (one cell,
each compartment's green pattern), :mod:`.render` (whole fields with optics and camera noise),
:mod:`.screen` (cropping and writing the archive roots with the non-cell list, the example gallery).

Difficulty (on purpose, as in the paper): the punctate classes share dot
counts and sizes and differ mainly in where dots sit (vacuole rim, nuclear
edge, cortex, anywhere); nucleus and nucleolus differ by the crescent;
expression, defocus, size, budding and rotation vary a lot per cell, so global
intensity statistics separate classes only partly.
"""

from deepyeast.data.make_synthetic.plan import FIELD_SIZE, SIZES, plan_screen
from deepyeast.data.make_synthetic.render import render_field
from deepyeast.data.make_synthetic.screen import example_crops, make_gallery, make_screen, write_noncell_list

__all__ = ["SIZES", "FIELD_SIZE", "plan_screen", "render_field", "make_screen", "make_gallery", "example_crops",
           "write_noncell_list"]
