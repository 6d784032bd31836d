"""The GPU suite's results.json as markdown: one section per stage, the issue's targets as ratios."""

from __future__ import annotations

import statistics
from typing import Any

TARGET_MFU = 0.60
TARGET_VS_EAGER = 1.5
TARGET_E2E = 0.90


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# vitserve GPU suite",
        "",
        f"command: `{results['command']}`",
        f"started: {results['started']}; device: **{results['device']}**"
        + (
            "; **SMOKE RUN: tiny model, seconds per point; these figures say nothing about a GPU**"
            if results["smoke"]
            else ""
        ),
        "",
        "environment: " + ", ".join(f"{k}: {v}" for k, v in results["environment"].items()),
        "",
        "| stage | status | seconds (budget) | reason |",
        "| --- | --- | ---: | --- |",
    ]
    stages = results["stages"]
    for name, stage in stages.items():
        took = (
            f"{stage.get('seconds', 0):.0f} ({stage.get('budget_s', 0):.0f})" if "seconds" in stage else "-"
        )
        lines.append(f"| {name} | {stage['status']} | {took} | {stage.get('reason', '')[:300]} |")
    for name, render in (("export", export_section), ("model", model_section), ("serve", serve_section)):
        figures = stages.get(name, {}).get("figures")
        if figures:
            lines += ["", *render(figures)]
    problems = [(n, e) for n, s in stages.items() for e in s.get("errors", [])]
    if problems:
        lines += ["", "## Errors and skips", ""]
        lines += [
            f"- {n} / {e['where']}: "
            + (f"error: {e['error']}" if "error" in e else f"skipped: {e['skipped']}")
            for n, e in problems
        ]
    return "\n".join(lines) + "\n"


def export_section(figures: dict[str, Any]) -> list[str]:
    lines = ["## 1. FP16 export, parity as served, node placement", ""]
    for name in ("vit", "digits"):
        model = figures.get(name)
        if not model:
            continue
        lines.append(f"**{name}** ({model.get('source', '?')})")
        lines.append("")
        export = model.get("export", {})
        if export:
            gated = "gated" if export.get("fp16_gated") else f"NOT gated: {export.get('fp16_gate_refused')}"
            lines.append(f"- FP16 export: {gated}")
            for variant, gate in export.get("gates", {}).items():
                metrics = ", ".join(f"{k} {v:.6g}" for k, v in gate["metrics"].items())
                lines.append(f"  - {variant} gate on {gate['provider']}: {metrics}")
        parity = model.get("parity_as_served")
        if parity:
            lines.append(
                f"- as served ({', '.join(parity['session_providers'])}; {parity['images']} images): "
                f"max |Δlogit| {parity['max_abs_logit']:.4g}, top-1 agreement {parity['top1_agreement']:.4f}"
                + (
                    f", accuracy FP16 {parity['accuracy_fp16']:.4f} vs PyTorch FP32 "
                    f"{parity['accuracy_fp32_pytorch']:.4f}"
                    if "accuracy_fp16" in parity
                    else ""
                )
            )
        place = model.get("placement")
        if place:
            lines.append(
                f"- placement (ORT profile of one run): session {place['session_providers']}; "
                f"nodes by provider "
                f"{place['nodes_by_provider']}; fused attention on CUDA: {place['attention_on_cuda']} of "
                f"{place['attention_nodes']} ({place['attention_ops']}); all on CUDA: "
                f"**{place['all_attention_on_cuda']}**"
            )
            if place["off_cuda"]:
                off = ", ".join(
                    f"{n['op']}@{n['provider'].removesuffix('ExecutionProvider')}"
                    for n in place["off_cuda"][:12]
                )
                lines.append(f"  - nodes not on CUDA (first {min(12, len(place['off_cuda']))}): {off}")
        lines.append("")
    return lines


def model_section(figures: dict[str, Any]) -> list[str]:
    rows = figures.get("rows", [])
    gflop = figures.get("flops_per_image", 0) / 1e9
    lines = [
        "## 2. Model-only images/s (MFU)",
        "",
        f"{figures.get('gpu', figures.get('device'))}; "
        f"FP16 ViT {figures.get('model', {}).get('config', {})}; "
        f"{gflop:.2f} GFLOP per image; peak {figures.get('peak_tflops')} TFLOPS; torch.compile backend "
        f"{figures.get('compile_backend')}; {figures.get('versions')}",
        "",
    ]
    if not rows:
        return [*lines, "no figures"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    cell = {(r["variant"], r["batch"]): r for r in rows}
    lines += ["| batch | " + " | ".join(variants) + " |", "| ---: |" + " ---: |" * len(variants)]
    for b in batches:
        cells = [
            f"{cell[(v, b)]['images_per_s']:.1f} ({cell[(v, b)]['mfu']:.1%})" if (v, b) in cell else "-"
            for v in variants
        ]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    best = {v: max((r for r in rows if r["variant"] == v), key=lambda r: r["images_per_s"]) for v in variants}
    lines += [
        "",
        "best batch per variant: "
        + "; ".join(
            f"{v} {r['images_per_s']:.1f} img/s at b={r['batch']} (MFU {r['mfu']:.1%})"
            for v, r in best.items()
        ),
    ]
    served, eager = best.get("ort-served"), best.get("torch-eager-fp16")
    if served:
        lines.append(
            f"- target: ort-served MFU at its best batch {served['mfu']:.1%} (target >= {TARGET_MFU:.0%}): "
            f"{'met' if served['mfu'] >= TARGET_MFU else 'NOT met'}"
        )
    if served and eager:
        ratio = served["images_per_s"] / eager["images_per_s"]
        lines.append(
            f"- target: ort-served / torch-eager-fp16, best vs best: {ratio:.2f}x "
            f"(target >= {TARGET_VS_EAGER}x): "
            f"{'met' if ratio >= TARGET_VS_EAGER else 'NOT met'}"
        )
        ratios = [
            (b, cell[("ort-served", b)]["images_per_s"] / cell[("torch-eager-fp16", b)]["images_per_s"])
            for b in batches
            if ("ort-served", b) in cell and ("torch-eager-fp16", b) in cell
        ]
        lines.append(
            "- ort-served / torch-eager-fp16 at the same batch: "
            + ", ".join(f"b={b} {r:.2f}x" for b, r in ratios)
        )
    fastest = max(best.values(), key=lambda r: r["images_per_s"])
    lines.append(f"- fastest configuration: {fastest['variant']} at b={fastest['batch']}")
    return lines


def serve_section(figures: dict[str, Any]) -> list[str]:
    lines = ["## 3. The service end to end", ""]
    setup = figures.get("setup", {})
    lines.append(
        f"server settings: {setup.get('env')}; startup {_fmt(figures.get('startup_s'))} s; "
        f"model: {figures.get('model_info', {})}"
    )
    for label, cap in figures.get("decode_capacity", {}).items():
        lines.append(
            f"- decode capacity alone, {label}: {cap['images_per_s']:.1f} img/s in "
            f"{cap['processes']} processes "
            f"(slowest process {cap['per_process_images_per_s']:.1f})"
        )
    gpu = figures.get("gpu_utilisation")
    if gpu:
        lines.append(f"- GPU utilisation: {gpu}")
    points = figures.get("points", [])
    if not points:
        return [*lines, "", "no points measured"]
    lines += [
        "",
        "| image | c | img/s | p50 ms | p99 ms | failed | mean batch | GPU util mean/max % "
        "| server CPU ms/img "
        "| bound img/s | e2e / bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        g = p.get("gpu", {})
        util = f"{g['util_mean_pct']:.0f}/{g['util_max_pct']:.0f}" if "util_mean_pct" in g else "-"
        lines.append(
            f"| {p['image']} | {p['concurrency']} | {p['images_per_s']:.1f} | {p['p50_ms']:.1f} "
            f"| {p['p99_ms']:.1f} "
            f"| {p['failed']} | {p['batch_sizes']['mean']:.1f} | {util} | {p['server_cpu_ms_per_image']:.2f} "
            f"| {_fmt(p['bound'])} | {_fmt(p['ratio_to_bound'], '.0%')} |"
        )
    for label in dict.fromkeys(p["image"] for p in points):
        peak = max((p for p in points if p["image"] == label), key=lambda p: p["images_per_s"])
        ratio = peak["ratio_to_bound"]
        verdict = "-" if ratio is None else ("met" if ratio >= TARGET_E2E else "NOT met")
        lines.append(
            f"- {label}: peak {peak['images_per_s']:.1f} img/s at c={peak['concurrency']}, "
            f"{_fmt(ratio, '.0%')} of its bound (target >= {TARGET_E2E:.0%}): {verdict}"
        )
    generator = [p["generator_cpu_ms_per_request"] for p in points]
    lines.append(f"- wrk CPU per request: median {statistics.median(generator):.3f} ms (one wrk thread)")
    return lines
