"""Build hook: the model zoo goes into the wheel.

Everything else is in pyproject.toml.  ``models/`` (the Caffe model-zoo folder: the DeepYeast
prototxts and their readme) lies beside the package in a checkout, outside it, so package data
cannot name it; a non-editable build copies it into the package as ``deepyeast/models/``, where
:func:`deepyeast.caffe.zoo.zoo_dir` finds it in an installed package.  Editable installs use
the checkout's own ``models/``.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


class BuildPyWithZoo(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, _, files in os.walk(ZOO):
            target = os.path.join(self.build_lib, "deepyeast", "models", os.path.relpath(folder, ZOO))
            self.mkpath(target)
            for name in sorted(files):
                self.copy_file(os.path.join(folder, name), os.path.join(target, name))


setup(cmdclass={"build_py": BuildPyWithZoo})
