"""benchmarks/gpu_check.py cannot rot between GPU runs: its --tiny CPU run goes through
every section (search, retrain with and without compile, overhead, bf16, RNN kernels)."""
import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_tiny_cpu_run_passes_every_section(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    figs = json.loads(out.read_text())
    lines = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line and not line.startswith("note"))
    assert set(figs) <= set(lines) and figs["ok"] is True
    assert not [k for k in figs if k.endswith("_error")]
    for space in ("enas_micro", "enas_macro", "enas_rnn", "nb201"):
        assert figs[f"{space}_search_finite"] is True and figs[f"{space}_search_rewards_finite"] is True
        assert figs[f"{space}_search_shared_step_ms"] > 0 and figs[f"{space}_search_paper_search_minutes"] > 0
        assert figs[f"{space}_overhead_ratio"] > 0 and figs[f"{space}_bf16_agrees"] is True
    for space in ("enas_micro", "enas_macro", "enas_rnn"):
        for mode in ("off", "on"):
            assert figs[f"{space}_retrain_compile_{mode}_step_ms"] > 0
    assert figs["rnn_kernel_reference_step_ms"] > 0 and figs["rnn_kernel_fused_step_ms"] > 0


@pytest.mark.slow
def test_without_cuda_it_says_so_and_fails(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no CUDA device, whatever this machine has
    r = subprocess.run([sys.executable, str(SCRIPT), "--json", str(tmp_path / "x.json")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 2 and "cuda_available=false" in r.stdout and "no CUDA device" in r.stderr
