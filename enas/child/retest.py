"""Test a retrained run again (``enas evaluate``): load the weights its test figure was
measured with, recompute the test metric, and compare it with the run's result.json.

The command keeps the name the command-line contract gives it; its code lives here, not
in enas/evaluate/, which measures a search (rankings, tables, ground truths).
"""
from __future__ import annotations

import math

from enas.child.retrain import Retrain, count_params, load_tested_weights, read_result


def retest(rt: Retrain) -> dict:
    """Load the saved model of a reopened retrain (best-valid for an LM, the final
    weights otherwise), recompute the test metric, compare it to result.json."""
    run_dir = rt.run_dir
    recorded = read_result(run_dir)
    weights, ctx = load_tested_weights(rt)
    with ctx:
        test = rt.task.evaluate(rt.model, None, "test")
    m = rt.task.metric
    name = "perplexity" if m == "ppl" else m
    out = {"metric": f"test_{name}", "value": test[m], "weights": weights, "params": count_params(rt.model),
           "recorded": None, "match": None, "data_dir": rt.task_data_dir}
    if recorded is not None:
        rec = recorded.get(f"test_{name}")
        out["recorded"] = rec
        if rec is not None:
            out["match"] = math.isclose(test[m], rec, rel_tol=1e-4, abs_tol=1e-6)
    return out
