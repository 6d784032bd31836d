"""`vitserve bench gpu --smoke` end to end on this machine: every stage ran and left figures or a reason.

The GPU's figures need a GPU (docs/gpu.md). Here the suite's plumbing is under test, for real: the
export through the project's pipeline, the node placement read from ONNX Runtime's profile, every
model-only variant, a real server driven by wrk with the batch sizes read from /metrics, and the
results written as JSON and markdown. How fast anything ran is the suite's to report, not this test's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitserve.bench.gpu_export import VIT_CONFIGS
from vitserve.bench.gpu_model import VARIANTS
from vitserve.bench.gpu_record import StageRecord
from vitserve.bench.gpu_serve import IMAGES, rate_at
from vitserve.cli import main
from vitserve.models.vit import PRESETS

# Generous: on a loaded 2-core machine a stage must not be cut short by its budget here.
BUDGETS = ["--budget-export-s", "900", "--budget-model-s", "300", "--budget-serve-s", "600"]


def test_smoke_run_records_every_stage_with_figures_or_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["bench", "gpu", "--smoke", "--out", str(out), "--work", str(tmp_path / "work"), *BUDGETS]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    stages = results["stages"]
    assert list(stages) == ["export", "model", "serve"]
    for name, stage in stages.items():
        assert stage["status"] in ("ok", "partial"), f"{name}: {stage['status']}: {stage['reason']}"
        assert stage["figures"], name
        assert (out / f"{name}.log").is_file()
        for problem in stage["errors"]:
            assert problem.get("error") or problem.get("skipped"), problem
        if stage["status"] == "partial":
            assert stage["reason"]

    export = stages["export"]["figures"]
    for model, depth in (("vit", VIT_CONFIGS["tiny"].depth), ("digits", PRESETS["digits"].depth)):
        figures = export[model]
        assert figures["placement"]["attention_nodes"] == depth, figures["placement"]
        parity = figures["parity_as_served"]
        assert parity["top1_agreement"] >= 0.9 and parity["max_abs_logit"] >= 0
        if results["device"] == "cpu":
            # The FP16 gate is refused without CUDA: said so, and an ungated FP16 graph was still timed.
            assert figures["export"]["fp16_gate_refused"].startswith("GateUnavailableError")
            assert not figures["placement"]["all_attention_on_cuda"]
        else:
            assert figures["placement"]["all_attention_on_cuda"], figures["placement"]
    assert export["digits"]["parity_as_served"]["accuracy_fp16"] > 0.9  # the trained model, real images

    model = stages["model"]["figures"]
    measured = {r["variant"] for r in model["rows"]}
    said = {e["where"].split(" ")[0] for e in stages["model"]["errors"]}
    assert set(VARIANTS) <= measured | said, (measured, said)
    assert {"ort-served", "ort-iobinding", "torch-eager-fp16", "torch-compile"} <= measured
    assert all(r["images_per_s"] > 0 and 0 < r["mfu"] < 1 for r in model["rows"])

    points = stages["serve"]["figures"]["points"]
    assert {(p["image"], p["concurrency"]) for p in points} == {(i, c) for i in IMAGES for c in (1, 4)}
    for p in points:
        assert p["failed"] == 0 and p["images_per_s"] > 0 and p["p99_ms"] >= p["p50_ms"] > 0
        assert p["batch_sizes"]["batches"] > 0 and p["batch_sizes"]["mean"] >= 1
        assert p["bound"] and p["ratio_to_bound"] > 0
        assert p["gpu"]  # utilisation figures, or why there are none
    assert set(stages["serve"]["figures"]["decode_capacity"]) == set(IMAGES)

    summary = (out / "summary.md").read_text()
    for heading in ("## 1. FP16 export", "## 2. Model-only images/s", "## 3. The service end to end"):
        assert heading in summary
    assert "SMOKE RUN" in summary and summary in capsys.readouterr().out


def test_a_stage_record_survives_on_disk_and_says_what_failed(tmp_path: Path) -> None:
    record = StageRecord(tmp_path / "stage.json", budget_s=60)
    record.put("a", "b", value=1)
    with record.attempt("step"):
        raise ValueError("no kernel for this op")
    saved = json.loads((tmp_path / "stage.json").read_text())
    assert saved["figures"]["a"] == {"b": 1} and "step" in saved["figures"]["step_seconds"]
    assert saved["errors"] == [{"where": "step", "error": "ValueError: no kernel for this op"}]


def test_model_only_rate_between_measured_batch_sizes() -> None:
    rates = {1: 100.0, 8: 800.0, 32: 1600.0}
    assert rate_at(rates, 0.5) == 100.0 and rate_at(rates, 64) == 1600.0
    assert rate_at(rates, 20) == pytest.approx(1200.0)
    assert rate_at({}, 4) is None
