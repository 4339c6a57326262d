"""The environment files agree with each other and with the code: pyproject.toml's ranges (which
declare every package the code imports), the lock, environment.yml, caffe-packages.txt,
system-packages.txt, and the package data a built wheel carries.

environment.yml cannot be solved here (no conda channel is reachable); what is checked
is that it names the same packages with the same ranges as pyproject.toml.
"""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from _requirements import reason

from _data_helpers import REPO_ROOT
from deepyeast.caffe.root import caffe_root_path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.version import Version

# conda-forge's names for PyPI packages whose names differ
CONDA_TO_PYPI = {"python-lmdb": "lmdb", "opencv": "opencv-python-headless", "pytorch": "torch"}
# conda entries that are not Python packages of pyproject.toml
CONDA_NON_PYTHON = {"python", "pip", "r-base", "r-randomforest"}


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras=("tests", "r")):
    """{normalized name: Requirement} of pyproject.toml's dependencies and the given extras."""
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return {_norm(r.name): r for r in reqs}


def _environment_yml():
    """(conda entries, pip entries) of environment.yml as lists of strings, comments dropped.

    A line parser for this file's simple layout (PyYAML is not a dependency): conda
    entries are "  - x" under dependencies, pip entries "      - x" under "  - pip:".
    """
    conda, pip = [], []
    section = None
    with open(os.path.join(REPO_ROOT, "environment.yml")) as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if not line.startswith(" "):
                section = line.rstrip(":")
                continue
            if section != "dependencies":
                continue
            item = line.strip()
            assert item.startswith("- "), raw
            if item == "- pip:":
                continue
            (pip if raw.startswith("      ") else conda).append(item[2:].strip())
    return conda, pip


def _lock():
    """{normalized name: (version, [hashes])} of requirements.txt."""
    text = open(os.path.join(REPO_ROOT, "requirements.txt")).read()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", block)  # name[extras]==version
        if m:
            pins[_norm(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return text, pins


def test_environment_yml_has_the_declared_packages_and_ranges():
    declared = _declared()
    conda, pip = _environment_yml()
    assert "-e ." in pip
    found = {}
    for entry in conda:
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry)
        name, rest = m.group(1), m.group(2).split()
        spec = rest[0] if rest and not rest[0].startswith("=") else ""
        if name in CONDA_NON_PYTHON:
            continue
        found[_norm(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec)
    for entry in pip:
        if entry != "-e .":
            req = Requirement(entry)
            found[_norm(req.name)] = req.specifier
    assert set(found) == set(declared), (sorted(set(found) ^ set(declared)))
    for name, req in declared.items():
        assert found[name] == req.specifier, (name, str(found[name]), str(req.specifier))
    # R itself: the system packages of the demo, under conda-forge's names
    conda_names = {re.match(r"[A-Za-z0-9_.\-]+", e).group(0) for e in conda}
    assert {"r-base", "r-randomforest"} <= conda_names
    assert [e for e in conda if e.startswith("pytorch")][0].split()[-1] == "cpu*"


def test_lock_pins_every_declared_package_in_range_with_hashes():
    text, pins = _lock()
    assert "make lock" in text.split("\n\n", 1)[0], "the lock's header names the command that writes it"
    for name, req in _declared().items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt"
        version = pins[name][0]
        assert req.specifier.contains(Version(version), prereleases=True), (name, version, str(req.specifier))
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no --hash in requirements.txt"
    # the CPU build of torch, never PyPI's CUDA build
    assert Version(pins["torch"][0]).local == "cpu", pins["torch"]
    assert "setuptools" in pins, "the editable install builds with the lock's setuptools (--no-build-isolation)"


def test_check_python_deps_reports_an_unmet_range(tmp_path):
    """scripts/check_python_deps.py (PIP_INSTALL=none) accepts this environment and names what is missing."""
    script = os.path.join(REPO_ROOT, "scripts", "check_python_deps.py")
    ok = subprocess.run([sys.executable, script, "tests", "r"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fake = tmp_path / "pyproject.toml"
    fake.write_text('[project]\nname = "x"\ndependencies = ["numpy>=99", "surely-not-installed-pkg", "pytest"]\n')
    res = subprocess.run([sys.executable, script, "--pyproject", str(fake)], capture_output=True, text=True)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert any("numpy>=99: 2." in line for line in lines), lines
    assert any("surely-not-installed-pkg: not installed" in line for line in lines), lines
    assert not any("pytest" in line for line in lines), lines


def _caffe_packages(*args, **kw):
    return subprocess.run([os.path.join(REPO_ROOT, "scripts", "caffe_packages.sh"), *args],
                          capture_output=True, text=True, **kw)


def test_caffe_packages_pins_every_requested_package_once():
    requested = _caffe_packages("requested").stdout.split()
    pins = _caffe_packages("pins").stdout.split()
    assert {"caffe", "python3-caffe"} <= set(requested)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*=[0-9][A-Za-z0-9.+~:\-]*", p) for p in pins), pins
    names = [p.split("=", 1)[0] for p in pins]
    assert len(names) == len(set(names))
    assert set(requested) <= set(names)


def test_caffe_packages_check_names_each_difference(tmp_path):
    """A root whose dpkg status differs from the pins: one line per difference, exit 1."""
    pins = _caffe_packages("pins").stdout.split()
    status = tmp_path / "root" / "var" / "lib" / "dpkg"
    status.mkdir(parents=True)
    stanzas = []
    for i, pin in enumerate(pins):
        name, version = pin.split("=", 1)
        if name == "caffe":
            version = "0.9"
        if i == 1:
            continue  # one package missing
        stanzas.append(f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n")
    stanzas.append("Package: extra-tool\nStatus: install ok installed\nVersion: 1.0\n")
    stanzas.append("Package: removed-one\nStatus: deinstall ok config-files\nVersion: 2.0\n")
    (status / "status").write_text("\n".join(stanzas))
    res = _caffe_packages("check", str(tmp_path / "root"))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert any("has caffe=0.9" in line for line in lines)
    assert any(f"lacks {pins[1].split('=')[0]}" in line for line in lines)
    assert any("extra-tool=1.0, which caffe-packages.txt does not list" in line for line in lines)
    # the same root with the pins restored passes
    stanzas = [f"Package: {p.split('=', 1)[0]}\nStatus: install ok installed\nVersion: {p.split('=', 1)[1]}\n"
               for p in pins]
    (status / "status").write_text("\n".join(stanzas))
    res = _caffe_packages("check", str(tmp_path / "root"))
    assert res.returncode == 0, res.stderr
    assert f"exactly the {len(pins)} packages" in res.stdout


@pytest.mark.caffe
@pytest.mark.skipif(not os.path.isdir(os.path.join(caffe_root_path(), "var", "lib", "dpkg")),
                    reason=reason("caffe", "no Caffe root with a package database (make caffe)"))
def test_host_caffe_root_is_exactly_the_pinned_list():
    res = _caffe_packages("check", caffe_root_path())
    assert res.returncode == 0, res.stderr


def test_system_packages_lines_have_a_group_and_a_check():
    groups = {}
    with open(os.path.join(REPO_ROOT, "system-packages.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
            fields = line.split(None, 2)
            if not fields:
                continue
            assert len(fields) == 3, line
            groups.setdefault(fields[1], []).append(fields[0])
    assert set(groups) == {"demo", "test", "docker"}, groups
    assert {"r-base-core", "r-cran-randomforest"} <= set(groups["demo"])
    assert "chromium" in groups["test"] and "chromium" not in groups["demo"]
    assert {"podman", "buildah", "debootstrap"} <= set(groups["docker"])


def test_system_deps_on_a_machine_without_apt_names_what_is_missing(tmp_path):
    """Not Debian (no apt-get, no dpkg): nothing installed, one line naming the package and the ways on."""
    listing = tmp_path / "system-packages.txt"
    listing.write_text("# comment\nsurely-absent-pkg demo false\npresent-pkg demo true\nbrowser test false\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "sed", "tr", "id", "true", "false", "cat"):
        os.symlink(shutil.which(tool), tools / tool)
    script = os.path.join(REPO_ROOT, "scripts", "system_deps.sh")
    env = dict(os.environ, SKIP_SYSTEM="0", PATH=str(tools), SYSTEM_PACKAGES=str(listing))

    def run(*args, **extra):
        return subprocess.run(["/bin/sh", script, *args], capture_output=True, text=True, env=dict(env, **extra))

    res = run("demo")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "surely-absent-pkg" in res.stderr and "present-pkg" not in res.stderr
    assert "browser" not in res.stderr  # another group
    assert "SKIP_SYSTEM=1" in res.stderr and "installing" not in res.stdout
    res = run("--optional", "test")
    assert res.returncode == 0 and "warning" in res.stderr and "browser" in res.stderr
    res = run("demo", SKIP_SYSTEM="1")
    assert res.returncode == 0 and "SKIP_SYSTEM=1" in res.stdout


# ---------------------------------------------------------------- what the code imports, what a wheel holds

# imported by code that runs elsewhere: pycaffe in the Caffe root's python3 (deepyeast/caffe/pycaffe_forward.py)
NOT_FROM_PYPI = {"caffe"}


def _optional_import(parents):
    """True for an import in a ``try`` statement that catches ImportError (an optional import or its fallback)."""
    for parent in parents:
        if isinstance(parent, ast.Try):
            for handler in parent.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
    return False


def _third_party_imports(folders):
    """{dotted module (two components at most): first file importing it} of the .py files under folders."""
    local = {"deepyeast", "bench", "tests"} | {os.path.splitext(f)[0] for d in ("tests", "bench") for f in os.listdir(os.path.join(REPO_ROOT, d))}
    found = {}
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
            # a script run from its folder imports its siblings (pycaffe_forward.py -> feature_stream)
            siblings = {os.path.splitext(f)[0] for f in files if f.endswith(".py")}
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                tree = ast.parse(open(path).read(), path)
                parents = {}
                for parent in ast.walk(tree):
                    for child in ast.iter_child_nodes(parent):
                        parents[child] = parent
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module]
                    else:
                        continue
                    chain, p = [], node
                    while p in parents:
                        p = parents[p]
                        chain.append(p)
                    if _optional_import(chain):
                        continue
                    for module in modules:
                        top = module.split(".")[0]
                        if top in sys.stdlib_module_names or top in local | siblings or top in NOT_FROM_PYPI:
                            continue
                        found.setdefault(".".join(module.split(".")[:2]), os.path.relpath(path, REPO_ROOT))
    return found


def _distributions_of(module):
    """Normalized names of the installed distributions that provide ``module`` (e.g. bioimageio.spec)."""
    top = module.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if len(dists) > 1 and "." in module:  # a namespace package shared by several distributions
        prefix = module.replace(".", "/")
        dists = [d for d in dists
                 if any(str(f).startswith(prefix + "/") or str(f) == prefix + ".py"
                        for f in importlib.metadata.distribution(d).files or ())]
    return {_norm(d) for d in dists}


@pytest.mark.parametrize("folders, extras", [(("deepyeast", "analysis", "data_prep"), ("r", "napari")),
                                             (("tests", "docs"), ("tests", "r", "napari", "docs"))],
                         ids=["library-and-scripts", "tests"])
def test_every_imported_package_is_declared(folders, extras):
    """Each third-party module the code imports comes from a package pyproject.toml declares (the
    library and step scripts: the dependencies and the `r` and `napari` extras (deepyeast/napari); the
    tests and the docs' build hook: also the `tests` and `docs` extras)."""
    declared = set(_declared(extras))
    undeclared = []
    for module, where in sorted(_third_party_imports(folders).items()):
        dists = _distributions_of(module)
        assert dists, f"{module} (imported by {where}) is not installed here"
        if not dists & declared:
            undeclared.append(f"{module} ({where}): from {sorted(dists)}, not declared")
    assert not undeclared, undeclared


@pytest.mark.slow
def test_built_wheel_holds_the_package_data_and_works_installed(tmp_path, tmp_path_factory):
    """A non-editable build (`pip install .`): every module, caffe.proto, the forest's R script and the
    model zoo are in the wheel, and installed alone (no checkout on the path) the library finds them,
    and its `deepyeast` command lists every subcommand and classifies micrographs with a bundle it
    converted from Keras weights."""
    src = tmp_path / "src"
    top_level = {".git", "data", "runs", "build", "dist", ".pytest_cache"}

    def ignore(folder, names):  # what a clean clone lacks
        return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or n.startswith(".venv")
                or (os.path.samefile(folder, REPO_ROOT) and n in top_level)]

    shutil.copytree(REPO_ROOT, src, ignore=ignore)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "wheels"), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("deepyeast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {os.path.relpath(os.path.join(d, f), REPO_ROOT)
               for d, _, files in os.walk(os.path.join(REPO_ROOT, "deepyeast")) for f in files if f.endswith(".py")}
    assert modules - names == set()
    zoo = {os.path.join("deepyeast", "models", os.path.relpath(os.path.join(d, f), os.path.join(REPO_ROOT, "models")))
           for d, _, files in os.walk(os.path.join(REPO_ROOT, "models")) for f in files}
    assert {"deepyeast/models/deepyeast/deploy.prototxt", "deepyeast/models/deepyeast/solver_cpu.prototxt"} <= zoo
    assert {"deepyeast/caffe/proto/caffe.proto", "deepyeast/analysis/random_forest.R",
            "deepyeast/napari/napari.yaml"} | zoo <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\ndeepyeast = deepyeast.commands:main" in entry_points, entry_points
    assert "[napari.manifest]\ndeepyeast = deepyeast.napari:napari.yaml" in entry_points, entry_points
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                          str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    probe = ("import os, deepyeast\n"
             "from deepyeast.caffe.zoo import zoo_file\n"
             "from deepyeast.analysis.rbridge import R_SCRIPT\n"
             "from deepyeast.engine.run_config import write_run_config\n"
             "print(deepyeast.__file__); print(zoo_file('deploy.prototxt')); print(R_SCRIPT, os.path.isfile(R_SCRIPT))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPYEAST_MODELS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    res = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    package, deploy, r_script = res.stdout.splitlines()
    assert package.startswith(str(site) + os.sep), package
    assert deploy == os.path.join(str(site), "deepyeast", "models", "deepyeast", "deploy.prototxt")
    assert r_script.startswith(str(site) + os.sep) and r_script.endswith(" True"), r_script
    _installed_command_classifies(site, env, tmp_path, tmp_path_factory)


def _installed_command_classifies(site, env, tmp_path, tmp_path_factory):
    """The wheel's `deepyeast` (its console script, run outside the checkout): `--help` lists every subcommand;
    `convert-keras` turns Keras weights written by real Keras into a bundle; `classify` calls the proteins of
    the tiny screen's micrographs with it."""
    import csv

    import _keras_deepyeast as kd
    from deepyeast.commands import names
    from deepyeast.data.make_synthetic import example_crops
    from _data_helpers import tiny_screen

    command = str(site / "bin" / "deepyeast")

    def deepyeast(*args):
        res = subprocess.run([command, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert res.returncode == 0, (args, res.stderr[-3000:])
        return res

    listed = deepyeast("--help").stdout
    assert all(f"\n  {name} " in listed for name in names()), listed
    crops = example_crops("main", 0, 4, seed=1)
    h5 = kd.save_keras2_weights(kd.randomize(kd.build_model(), crops, seed=0), str(tmp_path / "keras.h5"))
    assert "12 classes" in deepyeast("convert-keras", h5, "--out", tmp_path / "bundle").stdout
    fields = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    with open(fields / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = tmp_path / "images.csv"
    table.write_text("image,plate,protein\n" + "".join(f"{fields / r['image']},{r['plate']},{r['protein']}\n"
                                                       for r in rows))
    out = tmp_path / "classified"
    line = deepyeast("classify", "--model", tmp_path / "bundle", "--images", table, "--out", out).stdout
    assert f"in {len(rows)} micrographs" in line and str(out) in line
    with open(out / "cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    with open(out / "proteins.csv", newline="") as f:
        proteins = list(csv.DictReader(f))
    assert len(cells) >= 3 * len(rows) and {p["protein"] for p in proteins} == {r["protein"] for r in rows}
    for cell in cells[:20]:
        assert abs(sum(float(cell[f"prob_{k}"]) for k in range(12)) - 1) < 1e-4
