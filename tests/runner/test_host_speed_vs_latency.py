"""The README's diagnosis, checked on the bundled run files: on the H200, a host-bound
backend's round latency follows the host's launch cost in that round; cuda-graph's barely does."""
from __future__ import annotations

import json
import statistics

from benchmarks.host_speed_vs_latency import backend_points, main


def test_hf_eager_decode_follows_the_host_speed_of_its_round_and_cuda_graph_does_not(bundled_v2_runs):
    """Per bundled finished H200 run with both backends: the correlation of a round's decode
    with its launch probe is typically strong for hf-eager (median over runs), and hf-eager's
    round-to-round spread dwarfs cuda-graph's in every run."""
    correlations = []
    for meta_path in sorted(bundled_v2_runs.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta["status"] != "finished" or meta["device_kind"] != "cuda":
            continue
        points = backend_points(meta_path.parent, "decode")
        if len(points.get("hf-eager", [])) < 20 or len(points.get("cuda-graph", [])) < 20:
            continue
        eager, graph = points["hf-eager"], points["cuda-graph"]
        correlations.append(statistics.correlation([x for x, _ in eager], [y for _, y in eager]))
        spread_eager, spread_graph = statistics.pstdev([y for _, y in eager]), statistics.pstdev([y for _, y in graph])
        assert spread_eager > 10 * spread_graph, (meta["run_id"], spread_eager, spread_graph)
    assert correlations, "no finished H200 protocol-2 run with hf-eager and cuda-graph rounds is bundled"
    assert statistics.median(correlations) > 0.5, correlations


def test_a_path_that_is_no_run_directory_gets_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a run directory" in err
