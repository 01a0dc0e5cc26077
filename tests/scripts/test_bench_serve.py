"""scripts/bench_serve.py runs end to end (tiny sizes): every row answers, the JSON holds what docs/BENCHMARKS.md
reports, and the rows compute the same answers. It checks that the benchmark works, never how fast it is."""

from __future__ import annotations

import json

import pytest
import torch

from scripts import bench_serve


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_bench_serve_quick(tmp_path, capsys, stream):
    out = tmp_path / "bench_serve.json"
    threads = torch.get_num_threads()
    try:
        rc = bench_serve.main(["--quick", "--threads", "1", "--concurrency", "1,2", "--requests", "2", "--n", "3",
                               "--max_new_tokens", "3", "--n_prompt_tokens", "12", "--out_path", str(out),
                               *(["--stream"] if stream else [])])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    rows = result["rows"]
    assert set(rows) == {"c1_batched", "c1_serial", "c2_batched", "c2_serial", "n_one_request", "n_independent",
                         "n_serial"}
    for name, row in rows.items():
        want = 3 * (3 if name.startswith("n_") else 2)  # every choice generated exactly --max_new_tokens tokens
        assert row["completion_tokens"] == want and row["tokens_per_s"] > 0 and row["runs"] == 1, name
    assert rows["n_one_request"]["requests"] == 1 and rows["n_independent"]["requests"] == 3
    assert set(result["ratios"]) == {"c1_batched_vs_serial", "c2_batched_vs_serial", "c2_batched_vs_c1_serial",
                                     "n_one_request_vs_n_independent", "n_one_request_vs_n_serial"}
    assert result["n_equals_independent"] and result["n_serial_equals_independent"]
    assert result["concurrent_equals_serial"]
    assert result["config"]["stream"] is stream and result["env"]["loadavg_end"] is not None
