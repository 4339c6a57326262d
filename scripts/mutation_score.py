#!/usr/bin/env python3
"""Share of mutants killed in the statistical core, per module, from mutmut's results (`make mutation`).

Reads `mutmut results --all true` (one line per mutant: NAME: STATUS) from stdin, keeps the mutants
whose names match the patterns given as arguments (the functions `make mutation` mutates), and prints
a Markdown table: per module the mutants killed, survived, with no covering test, timed out, and the
killed share of those a test ran (killed / (killed + survived + timeout)).  Exit 1 when the overall
share is below --goal (default 0.9).

Example:
  mutmut results --all true | python scripts/mutation_score.py 'deepyeast.engine.lr_policy.x_*'
"""

import argparse
import collections
import fnmatch
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("patterns", nargs="+", help="mutant name patterns (fnmatch), as given to mutmut run")
    p.add_argument("--goal", type=float, default=0.9, help="killed share required overall (default 0.9)")
    args = p.parse_args(argv)
    counts = collections.defaultdict(collections.Counter)
    for line in sys.stdin:
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name or not any(fnmatch.fnmatch(name, pat) for pat in args.patterns):
            continue
        module = name.split(".x", 1)[0]
        counts[module][status] += 1
    if not counts:
        print("no mutant results matched; run `make mutation` first", file=sys.stderr)
        return 2
    total = collections.Counter()
    print("| module | mutants | killed | survived | timeout | no test | killed share |")
    print("|---|---|---|---|---|---|---|")
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        print(_row(module, c))
    print(_row("all", total))
    tested = total["killed"] + total["survived"] + total["timeout"]
    return 0 if tested and total["killed"] / tested >= args.goal else 1


def _row(module, c):
    tested = c["killed"] + c["survived"] + c["timeout"]
    share = f"{c['killed'] / tested:.1%}" if tested else "-"
    return (f"| `{module}` | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['timeout']} | "
            f"{c['no tests']} | {share} |")


if __name__ == "__main__":
    sys.exit(main())
