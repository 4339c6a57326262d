"""Run real Caffe 1.0 (Debian bullseye's ``caffe`` and ``python3-caffe``) from a debootstrap root.

The root is built by ``make caffe`` (``scripts/build_caffe_root.sh``) under
``$DEEPYEAST_CAFFE_ROOT`` (default ``~/.cache/deepyeast/caffe-root``).
Commands run in it one of two ways (``exec_mode``; ``DEEPYEAST_CAFFE_EXEC``
chooses, by default ``chroot`` where it can work and ``loader`` elsewhere):

``chroot``
    inside the root with ``chroot`` in a private mount namespace (``unshare -m``),
    where the repository checkout, the temporary folder and the working
    directory are bind-mounted at their own paths, so relative paths in
    prototxts resolve exactly as outside.  The mounts vanish with the command.
    Needs root with CAP_SYS_ADMIN (which a default ``docker run`` lacks).
``loader``
    the root's programs started by the root's own dynamic loader
    (``ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path ...``) on
    the root's libraries, and the root's python3 with ``PYTHONHOME`` in the
    root: the same binaries and libraries, with no privileges at all (the
    Docker image uses this).  Files are those of the calling system, so every
    path works unchanged.

With ``DEEPYEAST_CAFFE_ROOT=/`` (Caffe installed on this system itself)
commands run directly instead.
"""

import functools
import glob
import os
import shlex
import subprocess
import tempfile

PACKAGE_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The folder holding the ``deepyeast`` package (the checkout, for an editable install): bound into
the root so that the package's own scripts (``pycaffe_forward.py``) are visible there."""


def caffe_root_path():
    """Folder of the Caffe root file system (it may not exist yet)."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "deepyeast", "caffe-root")
    return os.environ.get("DEEPYEAST_CAFFE_ROOT", default)


def is_native():
    """True when the root is ``/``: Caffe is installed on this system itself (e.g. run inside the root).

    Then commands run directly, without chroot, mounts or root privileges.
    """
    return os.path.realpath(caffe_root_path()) == os.sep


EXEC_MODES = ("chroot", "loader")
# the root's dynamic loader (bullseye: merged /usr, so lib/ is usr/lib/) and its built-in
# folders, searched after those of the root's ld.so.conf
LOADER = os.path.join("lib", "x86_64-linux-gnu", "ld-linux-x86-64.so.2")
DEFAULT_LIB_DIRS = ("/lib", "/usr/lib")


@functools.lru_cache(maxsize=None)
def _can_unshare():
    """True when this process may make a private mount namespace (root with CAP_SYS_ADMIN); asked once."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    try:
        return subprocess.run(["unshare", "--mount", "true"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def exec_mode():
    """How commands run in the root: ``native`` (root is ``/``), ``chroot`` or ``loader``.

    ``DEEPYEAST_CAFFE_EXEC`` (``chroot`` or ``loader``) chooses; unset, ``chroot``
    is used where a private mount namespace can be made (root with CAP_SYS_ADMIN),
    else ``loader``.
    """
    if is_native():
        return "native"
    mode = os.environ.get("DEEPYEAST_CAFFE_EXEC", "")
    if mode:
        if mode not in EXEC_MODES:
            raise ValueError(f"DEEPYEAST_CAFFE_EXEC={mode}: use one of {', '.join(EXEC_MODES)}")
        return mode
    return "chroot" if _can_unshare() else "loader"


def have_caffe_root():
    """True when the root exists, holds the caffe binary, and the chosen way of running it can work."""
    return not missing_reason()


def missing_reason():
    """Why real Caffe cannot run here, as one sentence (for pytest skips); empty when it can."""
    root = caffe_root_path()
    if not os.path.isfile(os.path.join(root, "usr", "bin", "caffe")):
        return f"no Caffe root at {root}: run `make caffe` (needs debootstrap and root)"
    try:
        mode = exec_mode()
    except ValueError as exc:
        return str(exc)
    if mode == "chroot" and not _can_unshare():
        return "DEEPYEAST_CAFFE_EXEC=chroot needs root with CAP_SYS_ADMIN (unshare); use DEEPYEAST_CAFFE_EXEC=loader"
    if mode == "loader" and not os.path.isfile(os.path.join(root, LOADER)):
        return f"no dynamic loader {LOADER} in the Caffe root {root}"
    return ""


def loader_library_path(root=None):
    """The root's library folders, in the order its own ``ld.so`` would search them (list of str).

    First the folders of the root's ``/etc/alternatives`` library choices (e.g. OpenBLAS for
    ``libblas.so.3``: the root's ``libblas.so.3`` is an absolute symlink through
    ``/etc/alternatives``, which would otherwise resolve on the calling system), then the
    folders of the root's ``/etc/ld.so.conf`` and the loader's defaults, all inside the root.
    """
    root = root or caffe_root_path()
    dirs = []
    alternatives = os.path.join(root, "etc", "alternatives")
    for name in sorted(os.listdir(alternatives)) if os.path.isdir(alternatives) else ():
        link = os.path.join(alternatives, name)
        if ".so" in name and os.path.islink(link) and os.readlink(link).startswith("/"):
            dirs.append(os.path.dirname(os.readlink(link)))
    dirs += _ld_so_conf_dirs(root, os.path.join(root, "etc", "ld.so.conf"), set())
    dirs += DEFAULT_LIB_DIRS
    out = []
    for d in dirs:
        d = os.path.join(root, d.lstrip("/"))
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def _ld_so_conf_dirs(root, conf, seen):
    """Folders named by an ld.so.conf file of the root, following its ``include`` lines."""
    if conf in seen or not os.path.isfile(conf):
        return []
    seen.add(conf)
    dirs = []
    with open(conf) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                for inc in sorted(glob.glob(os.path.join(root, pattern.lstrip("/")))):
                    dirs += _ld_so_conf_dirs(root, inc, seen)
            elif line:
                dirs.append(line)
    return dirs


def _loader_argv(argv, root):
    """``argv`` (a program of the root and its arguments) as started by the root's own loader."""
    program = argv[0]
    if "/" not in program:
        for d in ("usr/bin", "bin", "usr/sbin", "sbin"):
            candidate = os.path.join(root, d, program)
            if os.path.isfile(candidate):
                program = candidate
                break
        else:
            raise FileNotFoundError(f"{argv[0]}: no such program in the Caffe root {root}")
    else:
        program = os.path.join(root, program.lstrip("/"))
    with open(program, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise ValueError(f"{program}: not an ELF program; the loader mode runs the root's binaries only")
    return [os.path.join(root, LOADER), "--library-path", ":".join(loader_library_path(root)),
            program] + list(argv[1:])


def _bind_dirs(extra):
    dirs = [PACKAGE_HOME, tempfile.gettempdir(), os.getcwd()] + [os.path.abspath(d) for d in extra]
    out = []
    for d in dirs:
        d = os.path.realpath(d)
        if os.path.isdir(d) and not any(d == o or d.startswith(o + os.sep) for o in out):
            out = [o for o in out if not o.startswith(d + os.sep)] + [d]
    return out


def run_in_root(argv, cwd=None, binds=(), env=None, check=True, capture=True, timeout=None):
    """Run ``argv`` (list of str) inside the Caffe root; return ``subprocess.CompletedProcess``.

    ``cwd`` (default: the current directory) is where the command runs inside
    the root; ``binds`` are extra host folders to make visible at their own
    paths.  Output is captured as text unless ``capture`` is False.
    """
    if not have_caffe_root():
        raise RuntimeError(missing_reason())
    root = caffe_root_path()
    cwd = os.path.abspath(cwd or os.getcwd())
    run_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/root"),
               "LANG": "C.UTF-8", "GLOG_logtostderr": "1",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    run_env.update(env or {})
    mode = exec_mode()
    if mode in ("native", "loader"):
        if mode == "loader":
            argv = _loader_argv(argv, root)
            # the root's python3 (3.9) finds its standard library and dist-packages in the root
            run_env["PYTHONHOME"] = os.path.join(root, "usr")
            run_env["PYTHONNOUSERSITE"] = "1"
        return subprocess.run(list(argv), cwd=cwd, env=run_env, check=check, text=True, timeout=timeout,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None)
    mounts = []
    for d in _bind_dirs(list(binds) + [cwd]):
        target = root + d
        mounts.append(f"mkdir -p {shlex.quote(target)} && mount --bind {shlex.quote(d)} {shlex.quote(target)}")
    for sys_dir, kind in (("proc", "proc"), ("dev", None)):
        target = os.path.join(root, sys_dir)
        if kind:
            mounts.append(f"mount -t proc proc {shlex.quote(target)}")
        else:
            mounts.append(f"mount --rbind /dev {shlex.quote(target)}")
    inner = f"cd {shlex.quote(cwd)} && exec " + " ".join(shlex.quote(a) for a in argv)
    script = " && ".join(mounts + [f"exec chroot {shlex.quote(root)} /bin/sh -c {shlex.quote(inner)}"])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                          env=run_env, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def run_caffe(args, **kwargs):
    """Run the real ``caffe`` tool with ``args`` (list of str) inside the root."""
    return run_in_root(["caffe"] + list(args), **kwargs)


def run_pycaffe(script_path, args=(), **kwargs):
    """Run a Python script with the root's python3 (3.9) where ``import caffe`` works."""
    return run_in_root(["python3", os.path.abspath(script_path)] + list(args), **kwargs)


if __name__ == "__main__":  # the one default of the root's location, for Make and shell scripts
    print(caffe_root_path())
