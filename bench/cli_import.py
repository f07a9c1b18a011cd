"""CPU seconds of `kf-* --help`, as a ratio to bare Python and to `import tensorflow`.

    python bench/cli_import.py [--rounds 5]

Each command's `--help` runs in a fresh interpreter (as its console script
does) and reports its own user+system CPU time; the two baselines are
measured in the same run: `python -c pass` and `python -c "import
tensorflow"`. tests/test_cli_help.py asserts what "--help at once" means (no
framework is imported); this file measures what it costs, so a slower or
busier machine moves a figure here instead of failing a test.
"""

import argparse
import importlib.metadata
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_scripts():
    """(command, module, function) of the installed kf-* entry points."""
    points = importlib.metadata.entry_points(group="console_scripts")
    return sorted((p.name, p.module, p.attr) for p in points
                  if p.name.startswith("kf-"))

REPORT = """
import resource, sys
{body}
u = resource.getrusage(resource.RUSAGE_SELF)
sys.stderr.write(f"@@{{u.ru_utime + u.ru_stime}}")
"""

HELP = """
from {module} import {function} as main
try:
    main(["--help"])
except SystemExit:
    pass
"""


def cpu_seconds(body):
    proc = subprocess.run([sys.executable, "-c", REPORT.format(body=body)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return float(proc.stderr.rpartition("@@")[2])


def median_cpu(body, rounds):
    return statistics.median(cpu_seconds(body) for _ in range(rounds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    bare = median_cpu("pass", args.rounds)
    tf = median_cpu("import tensorflow", args.rounds)
    print(f"machine: {platform.machine()} {platform.processor() or ''} "
          f"python {platform.python_version()}")
    print(f"{'command':22s} {'CPU s':>7s} {'/bare':>7s} {'/import tf':>10s}")
    print(f"{'python -c pass':22s} {bare:7.3f} {1:7.2f} {bare / tf:10.3f}")
    print(f"{'import tensorflow':22s} {tf:7.3f} {tf / bare:7.2f} {1:10.3f}")
    for command, module, function in console_scripts():
        cpu = median_cpu(HELP.format(module=module, function=function), args.rounds)
        print(f"{command + ' --help':22s} {cpu:7.3f} {cpu / bare:7.2f} {cpu / tf:10.3f}")


if __name__ == "__main__":
    main()
