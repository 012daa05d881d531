"""Run every fuzz target (fuzz/targets.py) under atheris for a bounded time; CI runs this.

    python fuzz/run.py --seconds 20                 # each target 20 s, one after another
    python fuzz/run.py --seconds 60 --targets lmdb,image

Each target runs in its own process (libFuzzer ends the process when its time is up),
starting from the target's seeds, with a memory limit (an input that makes a reader
allocate more is a finding) and a per-input time limit (a hang is a finding). Prints
one line per target: inputs tried, seconds, findings; a finding's input is saved under
--findings. Exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: `fuzz` and `oracle_kd` import from here
RSS_LIMIT_MB = 2048  # a reader given a few kilobytes has no business going near this
INPUT_SECONDS = 10  # per input; the readers take milliseconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=20, help="fuzzing time per target (default 20)")
    p.add_argument("--targets", default=None, help="comma-separated target names (default: all)")
    p.add_argument("--findings", default="fuzz-findings", help="folder for inputs that found something")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one target in this process
    args, libfuzzer_args = p.parse_known_args(argv)
    if args.worker:
        return worker(args.worker, libfuzzer_args)
    sys.path.insert(0, str(ROOT))
    from fuzz.targets import TARGETS

    names = args.targets.split(",") if args.targets else sorted(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        p.error(f"unknown targets {', '.join(unknown)} (known: {', '.join(sorted(TARGETS))})")
    findings = Path(args.findings)
    findings.mkdir(parents=True, exist_ok=True)
    print(f"{'target':<18} {'inputs':>9} {'seconds':>8}  findings")
    found = 0
    for name in names:
        inputs, seconds, problems = fuzz_one(name, args.seconds, findings)
        found += len(problems)
        print(f"{name:<18} {inputs:>9,} {seconds:>8}  {'; '.join(problems) or 'none'}", flush=True)
    return 1 if found else 0


def fuzz_one(name: str, seconds: int, findings: Path) -> tuple[int, int, list[str]]:
    """(inputs tried, seconds, findings) of one target, run in a child process."""
    with tempfile.TemporaryDirectory() as corpus:
        sys.path.insert(0, str(ROOT))
        from fuzz.targets import seeds

        for i, seed in enumerate(seeds(name)):
            (Path(corpus) / f"seed-{i}").write_bytes(seed)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, corpus,
                   f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-timeout={INPUT_SECONDS}",
                   f"-artifact_prefix={findings.resolve()}/{name}-", "-print_final_stats=1"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    log = done.stdout + done.stderr
    runs = re.search(r"Done (\d+) runs in (\d+) second", log) or re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    inputs = int(runs.group(1)) if runs else 0
    took = int(runs.group(2)) if runs and runs.lastindex == 2 else seconds
    problems = [line.strip() for line in log.splitlines()
                if re.search(r"Uncaught Python exception|ERROR: libFuzzer|deadly signal|out-of-memory|timeout after", line)]
    problems += [f"saved {m}" for m in re.findall(r"Test unit written to (\S+)", log)]
    if done.returncode != 0 and not problems:
        problems = [f"exit status {done.returncode}: {log.strip().splitlines()[-1] if log.strip() else ''}"]
    return inputs, took, problems


def worker(name: str, libfuzzer_args: list[str]) -> int:
    """Fuzz target `name` in this process until libFuzzer's time is up (it exits the process)."""
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["oracle_kd", "fuzz"]):  # coverage of our code guides the mutations
        import oracle_kd.checkpoint  # noqa: F401
        import oracle_kd.tasks.scene_text.formats  # noqa: F401
        import oracle_kd.tasks.speech.formats  # noqa: F401
        from fuzz.targets import TARGETS
    target, scratch = TARGETS[name], Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))

    def one(data: bytes) -> None:
        target(data, scratch)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
