"""Per-module scores of the last `mutmut run` (`make mutate`), against a list of justified
equivalent survivors.

    python tools/mutation_report.py [SURVIVORS_FILE]

Reads mutmut's result files (mutants/**/*.py.meta). Each line of SURVIVORS_FILE (default
tests/mutation_survivors.txt) names a surviving mutant that changes no behaviour:

    <mutant name> <fingerprint> <one-line reason>

The fingerprint is the first 8 hex digits of the sha256 of the mutant's changed lines, so a
justification goes stale, and is reported, when a source edit renumbers mutants or changes
the code it was written for. Score = killed / (mutants - justified equivalents); mutants no
test reaches count as not killed. Killed includes mutants stopped at mutmut's timeout or by a
crash; the 'timeout' column says how many of them were, and the last row sums the modules.
Exits 1 while a survivor is neither killed nor justified, or a justification is stale.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict

# mutmut's exit codes (mutmut/stats.py): 1 and 3 are test failures; 36, 24, -24 (SIGXCPU),
# 152 and 255 a timeout (the mutant hung the tests: counted as killed, as mutmut's own badge
# does); -9 and -11 a test process the mutant crashed or that ran past its CPU limit.
KILLED = {1, 3, 36, 24, -24, 152, 255, -9, -11}
TIMED_OUT = KILLED - {1, 3}  # killed, but not by a failing test: shown in their own column
SURVIVED = {0}
NO_TESTS = {5, 33}


def load_results(root="mutants"):
    """{module path: {mutant name: exit code}} from mutmut's .meta files."""
    results = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py.meta"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    codes = json.load(f)["exit_code_by_key"]
                results[os.path.relpath(path, root)[:-len(".meta")]] = codes
    return results


def changed_lines(name):
    """The mutated lines of one mutant (its diff's '+' lines), via mutmut's own differ."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    diff = get_diff_for_mutant(name)
    return [ln[1:].strip() for ln in diff.splitlines()
            if ln.startswith("+") and not ln.startswith("+++")]


def fingerprint(name):
    return hashlib.sha256("\n".join(changed_lines(name)).encode()).hexdigest()[:8]


def load_justified(path):
    """{mutant name: (fingerprint, reason)}; '#' starts a comment line."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3:
                sys.exit(f"{path}:{number}: expected '<mutant> <fingerprint> <reason>'")
            out[parts[0]] = (parts[1], parts[2])
    return out


def _row(label, counts):
    scored = counts["mutants"] - counts["equivalent"]
    score = 100.0 * counts["killed"] / scored if scored else 100.0
    print(f"{label:44} {counts['mutants']:7} {counts['killed']:6} {counts['timeout']:7} "
          f"{counts['equivalent']:5} {counts['survived']:5} {counts['untested']:8} "
          f"{score:5.1f}%")


def main(argv):
    survivors_file = argv[1] if len(argv) > 1 else "tests/mutation_survivors.txt"
    results = load_results()
    if not results:
        sys.exit("no mutmut results under mutants/: run `make mutate`")
    justified = load_justified(survivors_file)
    problems, seen = [], set()
    print(f"{'module':44} {'mutants':>7} {'killed':>6} {'timeout':>7} {'equiv':>5} "
          f"{'surv':>5} {'untested':>8} {'score':>6}")
    grand = defaultdict(int)
    for module in sorted(results):
        counts = defaultdict(int)
        for name, code in sorted(results[module].items()):
            if code in KILLED:
                counts["killed"] += 1
                counts["timeout"] += code in TIMED_OUT
            elif code in SURVIVED and name in justified:
                seen.add(name)
                if justified[name][0] != fingerprint(name):
                    problems.append(f"stale justification (the mutant changed): {name}")
                    counts["survived"] += 1
                else:
                    counts["equivalent"] += 1
            elif code in NO_TESTS:
                counts["untested"] += 1
                problems.append(f"no test reaches: {name}")
            else:  # survived, or suspicious / skipped / not checked
                counts["survived"] += 1
                problems.append(f"survived: {name}  [{fingerprint(name)}]  "
                                f"{' | '.join(changed_lines(name))}")
        counts["mutants"] = len(results[module])
        _row(module, counts)
        for key, value in counts.items():
            grand[key] += value
    _row("all", grand)
    for name in sorted(set(justified) - seen):
        problems.append(f"justified but not a survivor (killed, or renamed): {name}")
    if problems:
        print(f"\n{len(problems)} mutant(s) to kill with a test, or to justify in "
              f"{survivors_file}:")
        print("\n".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
