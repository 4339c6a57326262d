"""bench/bench_engine.py --against REF: the engine of an older commit is exported whole and run as it was."""

import os
import re
import subprocess

from bench import bench_engine as be


def test_a_commit_is_exported_with_its_engine_and_models_and_reused(tmp_path):
    path, sha, date = be.export_ref("HEAD", str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{40}", sha) and re.fullmatch(r"\d{4}-\d\d-\d\d", date)
    for name in ("deepyeast/engine/net.py", "models/deepyeast/train_val.prototxt"):
        want = subprocess.run(["git", "-C", be.REPO, "show", f"{sha}:{name}"], capture_output=True, check=True).stdout
        with open(os.path.join(path, name), "rb") as f:
            assert f.read() == want, name
    os.remove(os.path.join(path, "deepyeast", "engine", "net.py"))
    assert be.export_ref(sha, str(tmp_path))[0] == path  # already there: reused, not exported again
    assert not os.path.exists(os.path.join(path, "deepyeast", "engine", "net.py"))
