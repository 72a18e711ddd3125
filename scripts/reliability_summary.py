"""Run the reliability tests and count, from their own output, what they tried.

    .venv/bin/python scripts/reliability_summary.py            # ~8 minutes here (the kill tests are slow)
    .venv/bin/python scripts/reliability_summary.py --parse-only   # count again from runs/reliability.log

Runs tests/test_bad_inputs.py, test_faults.py, the hypothesis fuzz tests (test_contract.py, test_tasks_fuzz.py,
test_tokenizer.py), the SIGKILL tests (test_kill.py, marked slow), the integer-option walk (test_count_options.py),
the prompt-length refusals, the resume traps and the 2-process tests (test_distributed.py) in one pytest process with `-s` and
`--hypothesis-show-statistics`, keeps the whole log in runs/reliability.log, and prints a Markdown table:
kills landed (and how many inside a checkpoint write), bad inputs rejected, fuzzing inputs run, tests passed
and failed. Every number is read from the log; nothing is assumed. Exit code: pytest's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/test_bad_inputs.py", "tests/test_faults.py", "tests/test_contract.py", "tests/test_tasks_fuzz.py",
         "tests/test_tokenizer.py", "tests/test_kill.py", "tests/test_real_disk.py", "tests/test_count_options.py",
         "tests/test_prompt_length.py", "tests/test_resume_traps.py", "tests/test_distributed.py"]


def main() -> int:
    log_path = ROOT / "runs" / "reliability.log"
    if "--parse-only" in sys.argv:
        return summarise(log_path.read_text(), log_path, 0)
    log_path.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", *FILES, "-m", "slow or not slow", "-s", "-rA", "-p", "no:cacheprovider",
           "--hypothesis-show-statistics"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    log_path.write_text(log)
    return summarise(log, log_path, proc.returncode)


def summarise(log: str, log_path: Path, returncode: int) -> int:
    kills = []  # one record per planned kill, printed by the kill tests as JSON after "kills: "
    for m in re.finditer(r"^[.sxF]*(\w+): uninterrupted [\d.]+ s; kills: (\[.*\])$", log, re.M):
        kills += [(m.group(1), r) for r in json.loads(m.group(2))]
    landed = [k for k in kills if k[1].get("killed")]
    in_write = [k for k in landed if k[1].get("torn_by_this_kill") or k[1].get("what") == "inside a checkpoint write"]
    bad_inputs = len(re.findall(r"^PASSED tests/test_bad_inputs\.py::", log, re.M))
    fuzz = [(int(a), int(b)) for a, b in re.findall(r"- (\d+) passing, (\d+) failing", log)]
    counts = len(re.findall(r"^PASSED tests/test_count_options\.py::test_(?:yaml_)?zero_and_minus_one\[", log, re.M))
    long_prompts = len(re.findall(r"^PASSED tests/test_prompt_length\.py::", log, re.M))
    resume = len(re.findall(r"^PASSED tests/test_resume_traps\.py::", log, re.M))
    resume += len(re.findall(r"^PASSED tests/test_distributed\.py::\S*(?:resume|killed)", log, re.M))
    passed = len(re.findall(r"^PASSED ", log, re.M))
    failed = len(re.findall(r"^(?:FAILED|ERROR) ", log, re.M))

    print("| what | count |\n|---|---|")
    print(f"| SIGKILLs that landed (SFT, ListOPD, sweep runs) | {len(landed)} of {len(kills)} planned |")
    print(f"| … of them inside a checkpoint write | {len(in_write)} |")
    print(f"| bad inputs rejected with a one-line error, exit 2, nothing written | {bad_inputs} |")
    print(f"| integer options × {{0, −1}} (flags and YAML) refused or documented | {counts} |")
    print(f"| over-long prompts refused before any work (tests) | {long_prompts} |")
    print(f"| resume traps (pass boundary, step 0, other data/options, 2-process kill) passed | {resume} |")
    print(f"| fuzzing inputs run (hypothesis; failing) | {sum(a for a, _ in fuzz)} ({sum(b for _, b in fuzz)}) |")
    print(f"| reliability tests passed / failed | {passed} / {failed} |")
    print(f"\nfull log: {log_path.relative_to(ROOT)}")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
