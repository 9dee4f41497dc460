"""Measure the spread the learning checks' thresholds are set from (not a test; run it by hand).

    python tests/learning_spread.py                      # every check, seeds 0-4, every kernel path, broken
    python tests/learning_spread.py --checks herd --seeds 0 1 2 --paths native avx2

Each run trains one check's configuration from ``test_learning.py`` in a fresh process with one torch thread (as
the test-suite runs), on one kernel path:

- ``native``: torch's default dispatch on this CPU;
- ``avx2`` / ``scalar``: ``ATEN_CPU_CAPABILITY`` forces torch's vectorised kernels down to AVX2 or to the plain
  C++ ones, as another CPU would run them;
- ``no-onednn``: ``torch.backends.mkldnn`` disabled, so oneDNN's kernels are not used.

``--broken`` adds one run per seed with the masking that check guards switched off. One line of JSON per run goes
to stdout; the summary table at the end is what the tests' comments quote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHECKS = {
    "kart": "train_kart_ppo",
    "maskable": "train_kart_maskable_ppo",
    "grid": "train_panda_grid_attention",
    "herd": "train_herd_gridnet",
}
PATHS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2"}, "scalar": {"ATEN_CPU_CAPABILITY": "default"}}
PATHS["no-onednn"] = {}

_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import test_learning
if {no_onednn!r}:
    torch.backends.mkldnn.enabled = False
start = time.perf_counter()
results = getattr(test_learning, {function!r})(seed={seed}, broken={broken})
print(json.dumps({{"return_mean": results["return_mean"], "invalid_action_rate": results["invalid_action_rate"],
                  "sampled_invalid_action_rate": results.get("sampled_invalid_action_rate"),
                  "seconds": time.perf_counter() - start, "capability": torch.backends.cpu.get_cpu_capability()}}))
"""


def run_one(check: str, seed: int, path: str, broken: bool) -> dict:
    code = _CHILD.format(
        tests=str(Path(__file__).parent),
        no_onednn=path == "no-onednn",
        function=CHECKS[check],
        seed=seed,
        broken=broken,
    )
    env = {**os.environ, **PATHS[path]}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"check": check, "seed": seed, "path": "broken" if broken else path, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--broken", action="store_true", help="also train each seed with the masking broken")
    args = parser.parse_args()
    rows = []
    for check in args.checks:
        runs = [(seed, path, False) for path in args.paths for seed in args.seeds]
        runs += [(seed, "native", True) for seed in args.seeds] if args.broken else []
        for seed, path, broken in runs:
            row = run_one(check, seed, path, broken)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\ncheck     path        n   min return  max return  max invalid rate (greedy; sampled)", flush=True)
    for check in args.checks:
        for path in [*args.paths, "broken"]:
            group = [row for row in rows if row["check"] == check and row["path"] == path]
            if group:
                returns = [row["return_mean"] for row in group]
                invalid = max(row["invalid_action_rate"] for row in group)
                sampled = [
                    row["sampled_invalid_action_rate"]
                    for row in group
                    if row["sampled_invalid_action_rate"] is not None
                ]
                sampled_text = f"; {max(sampled):.3f}" if sampled else ""
                print(
                    f"{check:9} {path:10} {len(group):2}   {min(returns):10.3f}  {max(returns):10.3f}  "
                    f"{invalid:.3f}{sampled_text}"
                )


if __name__ == "__main__":
    main()
