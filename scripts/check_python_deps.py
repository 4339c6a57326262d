#!/usr/bin/env python3
"""Check that this Python's environment satisfies pyproject.toml's requirements.

    python scripts/check_python_deps.py [--pyproject FILE] [EXTRA...]        e.g.  tests r

For environments made without pip's help (conda, a module system): prints one line
per requirement that is missing or out of range and exits 1; exits 0 when all hold.
"""
import importlib.metadata
import os
import sys
import tomllib

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement

PYPROJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")


def unmet(requirements):
    """The requirements (strings) this environment does not satisfy, each with why."""
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{text}: not installed")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(f"{text}: {version} installed")
    return out


def main(argv):
    pyproject = PYPROJECT
    if argv[:1] == ["--pyproject"]:
        pyproject, argv = argv[1], argv[2:]
    extras = argv
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in project.get("optional-dependencies", {}):
            sys.stderr.write(f"error: pyproject.toml has no extra {extra!r}\n")
            return 2
        requirements += project["optional-dependencies"][extra]
    problems = unmet(requirements)
    for line in problems:
        sys.stderr.write(f"{sys.executable}: {line}\n")
    if problems:
        sys.stderr.write("install them (pip install -e '.[tests,r]', or your environment's own way)\n")
        return 1
    print(f"{sys.executable}: all {len(requirements)} requirements of pyproject.toml hold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
