"""Mutation score per core module: how many of mutmut's one-token changes to the code make a test fail.

Runs ``mutmut run`` with pyproject's ``[tool.mutmut]`` (the core modules, against the tests that run in
the test process; each mutant only against the tests that reach its function), then prints one row per
module. A surviving mutant that changes nothing a caller can observe is listed, with the reason, in
tests/mutation_equivalents.txt and leaves the score's denominator. Exit code 1 when a module scores
under --target.

    python scripts/mutation.py                          # all core modules (2,200 mutants took 35 min on 2 cores)
    python scripts/mutation.py "cxrcam.evaluation.*"    # one package's mutants, then every module's row
    python scripts/mutation.py --no-run --survivors     # last results, with the mutants that survived
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"
RESULT_LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")
MODULE_OF = re.compile(r"^(?P<module>.+?)\.x[_ǁ]")  # cxrcam.config.x_require__mutmut_2, ....xǁClassǁmethod__...
KILLED = {"killed", "timeout", "caught by type check"}


def mutmut(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """mutmut from this interpreter's environment, run at the repository root."""
    executable = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(executable), *args], cwd=ROOT, text=True, check=True,
                          stdout=subprocess.PIPE if capture else None)


def read_results(text: str) -> dict[str, str]:
    """``mutmut results --all true`` as {mutant name: status}."""
    return {m["name"]: m["status"].strip() for m in map(RESULT_LINE.match, text.splitlines()) if m}


def read_equivalents(path: Path) -> dict[str, str]:
    """{mutant name: why it is equivalent}; one ``name  reason`` per line, comment lines start with ``#``."""
    equivalents = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, reason = line.strip().partition(" ")
        if not reason.strip():
            sys.exit(f"{path}:{number}: {name} needs a reason after it (why no caller can tell the difference)")
        equivalents[name] = reason.strip()
    return equivalents


def verdict(name: str, status: str, equivalents: dict[str, str]) -> str:
    """killed, equivalent, not run or survived (survived, no tests, suspicious, segfault: no test noticed)."""
    if status in KILLED:
        return "killed"
    if status == "survived" and name in equivalents:
        return "equivalent"
    if status in ("not checked", "skipped"):
        return "not run"
    return "survived"


def module_rows(results: dict[str, str], equivalents: dict[str, str]) -> dict[str, Counter]:
    rows: dict[str, Counter] = defaultdict(Counter)
    for name, status in results.items():
        match = MODULE_OF.match(name)
        row = rows[match["module"] if match else name.rsplit(".", 1)[0]]
        row["mutants"] += 1
        row[verdict(name, status, equivalents)] += 1
    return rows


def score(row: Counter) -> float | None:
    judged = row["killed"] + row["survived"]
    return None if judged == 0 else 100.0 * row["killed"] / judged


def print_table(rows: dict[str, Counter]) -> None:
    print(f"{'module':36} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} {'not run':>7} {'score':>7}")
    for module in sorted(rows):
        row, value = rows[module], score(rows[module])
        shown = "-" if value is None else f"{value:.1f}%"
        print(f"{module:36} {row['mutants']:7} {row['killed']:7} {row['equivalent']:7} {row['survived']:8} "
              f"{row['not run']:7} {shown:>7}")
    total = sum(rows.values(), Counter())
    print(f"{'all':36} {total['mutants']:7} {total['killed']:7} {total['equivalent']:7} {total['survived']:8} "
          f"{total['not run']:7} {score(total) or 0:6.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="mutant name patterns for mutmut run, e.g. 'cxrcam.config.*'")
    parser.add_argument("--no-run", action="store_true", help="only report the results of the last run")
    parser.add_argument("--survivors", action="store_true", help="list the mutants no test kills")
    parser.add_argument("--target", type=float, default=85.0, help="lowest acceptable score per module, in %%")
    args = parser.parse_args()

    if not args.no_run:
        mutmut("run", *args.patterns, capture=False)
    results = read_results(mutmut("results", "--all", "true").stdout)
    equivalents = read_equivalents(EQUIVALENTS)
    for name in sorted(set(equivalents) - {n for n, s in results.items() if s == "survived"}):
        print(f"{EQUIVALENTS.name}: {name} is listed but is not a surviving mutant now; remove its line")
    rows = module_rows(results, equivalents)
    if args.survivors:
        for name, status in sorted(results.items()):
            if verdict(name, status, equivalents) == "survived":
                print(f"{status:>10}  {name}")
    print_table(rows)
    low = [m for m, row in rows.items() if (score(row) or 100.0) < args.target]
    if low:
        print(f"under {args.target:g}%: {', '.join(sorted(low))} (mutmut show <name> prints a mutant's diff)")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
