"""Run real Caffe 1.0 (Debian bullseye's ``caffe`` and ``python3-caffe``) from a debootstrap root.

The root is built by ``make caffe`` (``scripts/build_caffe_root.sh``) under
``$DEEPYEAST_CAFFE_ROOT`` (default ``~/.cache/deepyeast/caffe-root``).
Commands run inside it with ``chroot`` in a private mount namespace
(``unshare -m``), where the repository checkout, the temporary folder and
the working directory are bind-mounted at their own paths, so relative
paths in prototxts resolve exactly as outside.  The mounts vanish with the
command.  Needs root (or the capabilities for unshare/chroot).

With ``DEEPYEAST_CAFFE_ROOT=/`` (set in the Docker image, where Caffe is
installed on the system itself) commands run directly instead.
"""

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
    """True when the root is ``/``: Caffe is installed on this system itself (the Docker image).

    Then commands run directly, without chroot, mounts or root privileges.
    """
    return os.path.realpath(caffe_root_path()) == os.sep


def have_caffe_root():
    """True when the root exists, holds the caffe binary, and we may chroot into it."""
    root = caffe_root_path()
    return (os.path.isfile(os.path.join(root, "usr", "bin", "caffe"))
            and (is_native() or (hasattr(os, "geteuid") and os.geteuid() == 0)))


def missing_reason():
    """Why real Caffe cannot run here, as one sentence (for pytest skips)."""
    root = caffe_root_path()
    if not os.path.isfile(os.path.join(root, "usr", "bin", "caffe")):
        return f"no Caffe root at {root}: run `make caffe` (needs debootstrap and root)"
    if not is_native() and os.geteuid() != 0:
        return "running real Caffe needs root (chroot)"
    return ""


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
    if is_native():
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
