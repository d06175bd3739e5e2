"""The same seed gives the same search: smoke searches on the shipped samples against
stored results (every metric the run logs and the chosen architecture).

A change that alters what a search computes fails here. When the change is meant to
(a new default, a fixed bug), regenerate the stored results and say why in the commit:

    python tests/test_golden.py
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from enas.cli import main

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = Path(__file__).parent.parent / "configs" / "smoke"

# Small enough for seconds on one core; every stage of the search runs: uniform shared
# training, the controller's warm-up and updates, derives, the final re-score and final
# training, the verdict, the training-free term of the score and a parameter budget.
CASES = {
    "nb201": ("nb201_search.yaml", [
        "search.epochs=2", "data.train_size=256", "data.valid_size=100", "search.derive_samples=3",
        "search.final_candidates=3", "search.final_train=1", "search.final_train_epochs=1",
        "controller.updates_per_epoch=3", "search.controller_warmup_epochs=1",
        "search.score={supernet: 1, naswot: 1}", "controller.reward_norm=true", "search.max_params=1000000"]),
    "ptb": ("ptb_search.yaml", [
        "search.epochs=2", "model.hidden=16", "data.batch_size=64", "data.eval_batch_size=64",
        "search.derive_samples=3", "controller.updates_per_epoch=3"]),
}


def run_case(name: str, run_dir: Path) -> dict:
    """One thread: reductions sum in another order on more threads, and the training-free
    term (NASWOT's activation codes) is sensitive to the last bit."""
    config, sets = CASES[name]
    argv = ["search", str(CONFIGS / config), "--data-dir", "sample", "--run-dir", str(run_dir), "--device", "cpu"]
    for s in sets:
        argv += ["--set", s]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    arch = yaml.safe_load((run_dir / "best_arch.yaml").read_text())
    return {"metrics": rows, "arch": arch["arch"]}


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-4,
                                                                                            abs_tol=1e-6)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_smoke_search_reproduces_its_stored_result(tmp_path, name):
    got = run_case(name, tmp_path / "run")
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    assert got["arch"] == want["arch"]
    assert len(got["metrics"]) == len(want["metrics"])
    for i, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
        assert sorted(g) == sorted(w), f"row {i}: keys differ"
        bad = {k: (g[k], w[k]) for k in w if not close(g[k], w[k])}
        assert not bad, f"row {i} differs from tests/golden/{name}.json: {bad}"


if __name__ == "__main__":
    import tempfile

    for case in sys.argv[1:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_case(case, Path(tmp) / "run")
        (GOLDEN / f"{case}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote tests/golden/{case}.json")
