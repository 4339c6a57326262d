"""bench/cpu_check.sh: issue 24's benches in one command; the commands it runs are ones the benches take."""

import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "cpu_check.sh")


def _dry(**env):
    out = subprocess.run([SCRIPT, "--dry-run"], env=dict(os.environ, PYTHON=sys.executable, **env),
                         capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.splitlines()]


def test_every_command_names_a_bench_and_options_it_takes():
    commands = _dry()
    assert [c[1] for c in commands] == ["bench/bench_engine.py", "bench/bench_profile.py", "bench/bench_screen.py",
                                        "bench/bench_demo.py", "bench/bench_screen_run.py"]
    for c in commands:
        assert c[0] == sys.executable
        usage = subprocess.run([sys.executable, os.path.join(REPO, c[1]), "--help"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
        for flag in (a for a in c[2:] if a.startswith("--")):
            assert re.search(re.escape(flag) + r"\b", usage), f"{c[1]} takes no {flag}"


def test_the_baselines_come_from_the_environment():
    default = {c[1]: c for c in _dry()}
    assert default["bench/bench_engine.py"][-2:] == ["--against", "cb787e7"]
    assert "--against" not in default["bench/bench_demo.py"]  # the demo's baseline doubles its hour: asked for
    chosen = {c[1]: c for c in _dry(ENGINE_REF="", DEMO_REF="abc1234", SCREEN_REF="def5678")}
    assert "--against" not in chosen["bench/bench_engine.py"]
    assert chosen["bench/bench_demo.py"][-2:] == ["--against", "abc1234"]
    assert chosen["bench/bench_screen_run.py"][-2:] == ["--against", "def5678"]


def test_an_unknown_argument_is_one_line_and_exit_2():
    r = subprocess.run([SCRIPT, "--fast"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == "" and r.stderr.strip().splitlines() == ["cpu_check: unknown argument --fast (--dry-run, --help)"]


def test_the_summary_finds_the_goal_lines_the_benches_write():
    # the lines cpu_check.sh greps for at the end, in the results the benches wrote
    pattern = re.search(r"grep -E '([^']+)' bench/RESULTS.md", open(SCRIPT).read()).group(1)
    with open(os.path.join(REPO, "bench", "RESULTS.md")) as f:
        found = [line for line in f if re.search(pattern, line)]
    assert any(line.startswith("Goals (issue 24): bf16 training") for line in found)
    assert any(line.startswith("Goal (issue 24): >= 280 cells/s") for line in found)
    assert any(": the demo took " in line for line in found)
    assert any(line.startswith("Micrograph to call:") for line in found)
    # the CPU's ceilings for the inference, whole-screen and demo goals (bench_engine, bench_screen_run, bench_demo)
    for start in ("This CPU's ceiling for the inference goal:", "This CPU's ceiling in bf16:",
                  "This CPU's ceiling for the goal:"):
        assert sum(line.startswith(start) for line in found) == 1, start
