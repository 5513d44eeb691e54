"""Export time and peak memory against the model's size on disk.

    python tests/benchmarks/bench_export.py [--sizes 25m,125m]

For a ~25M and a ~125M Llama-style model stored in bf16 (random weights, built here) with a
LoRA adapter, each export runs in its own child process, which reports:
- `copy_s`: reading the model's weight bytes and writing as many bytes (fsync'd): the floor
  any exporter pays; measured in the same child just before the export;
- the export's wall time (imports excluded) and its ratio to `copy_s`;
- the export's peak RSS above the child's RSS after imports, against the 16-bit model size.
Goals (issue 9): GGUF F16 no slower than 2x copy_s; peak RSS <= 1.5x the 16-bit model.
Run it alone: other work on these 2 cores moves the figures a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks._common import fmt, run_child, wait_for_quiet  # noqa: E402

SIZES = {
    "25m": dict(hidden_size=512, layers=8, heads=8, kv_heads=4, intermediate_size=1408),
    "125m": dict(hidden_size=768, layers=13, heads=12, kv_heads=12, intermediate_size=3072),
}
EXPORTS = [("gguf", "f16"), ("gguf", "q8_0"), ("hf", "f16")]


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def child(run: str, target: str, quant: str, out: str) -> None:
    """One export in this process: copy baseline, then the export, as one JSON line."""
    import torch  # noqa: F401  imports first: their memory is not the export's
    import transformers  # noqa: F401

    from studio.core.config import RunConfig
    from studio.core.export import ExportOptions, run_export

    model_dir = Path(RunConfig.load(Path(run) / "run.yaml").model.path)
    weights = sorted(model_dir.glob("*.safetensors"))
    t0 = time.perf_counter()
    total = 0
    with open(Path(out).parent / "copy.bin", "wb") as dst:
        for w in weights:
            data = w.read_bytes()
            total += len(data)
            dst.write(data)
            del data
        dst.flush()
        os.fsync(dst.fileno())
    copy_s = time.perf_counter() - t0
    os.remove(Path(out).parent / "copy.bin")
    rss0 = _status_kb("VmRSS")
    # The high-water mark so far includes the copy's buffer; reset it so the peak is the export's.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    last = run_export(
        ExportOptions(adapter=run, target=target, quant=quant, output=out, verify=False)
    )
    export_s = time.perf_counter() - t0
    assert last.type == "done", last
    peak_mb = _status_kb("VmHWM") / 1024
    # Again in the same process: the first export also pays one-off imports (tokenizer
    # classes, gguf, safetensors), a fixed second or so that dwarfs a small model's bytes.
    t0 = time.perf_counter()
    again = run_export(
        ExportOptions(
            adapter=run, target=target, quant=quant, output=out, verify=False, overwrite=True
        )
    )
    warm_s = time.perf_counter() - t0
    assert again.type == "done", again
    written = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(
        "RESULT "
        + json.dumps(
            {
                "copy_s": copy_s,
                "weights_bytes": total,
                "export_s": export_s,
                "rss_after_imports_mb": rss0 / 1024,
                "peak_mb": peak_mb,
                "warm_s": warm_s,
                "written_bytes": written,
            }
        )
    )


def build(size: str, root: Path) -> tuple[Path, int]:
    import torch
    from transformers import AutoModelForCausalLM

    from studio.core.tiny import build_model
    from tests.export_runs import make_run

    fp32 = build_model(root / f"{size}-fp32", vocab_size=2048, **SIZES[size])
    model = AutoModelForCausalLM.from_pretrained(fp32, dtype=torch.bfloat16)
    bf16 = root / f"{size}-bf16"
    model.save_pretrained(bf16)
    for f in fp32.iterdir():
        if not f.name.endswith(".safetensors") and f.name != "config.json":
            (bf16 / f.name).write_bytes(f.read_bytes())
    params = sum(p.numel() for p in model.parameters())
    return make_run(root, bf16, name=f"run-{size}"), params


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="25m,125m")
    ap.add_argument("--child", nargs=4, metavar=("RUN", "TARGET", "QUANT", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    rows = []
    for size in args.sizes.split(","):
        run, params = build(size, root)
        wait_for_quiet(0.5, 120)
        for target, quant in EXPORTS:
            out = root / f"out-{size}-{target}-{quant}"
            r = run_child(
                [sys.executable, __file__, "--child", str(run), target, quant, str(out)],
                env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
            )
            line = next((x for x in r["output"].splitlines() if x.startswith("RESULT ")), None)
            if r["rc"] != 0 or line is None:
                print(r["output"][-3000:])
                return 1
            res = json.loads(line[7:])
            size16 = params * 2 / 1e6
            rows.append(
                (
                    size,
                    f"{params / 1e6:.0f}M",
                    f"{target} {quant}",
                    res["copy_s"],
                    res["export_s"],
                    res["export_s"] / res["copy_s"],
                    res["warm_s"],
                    res["warm_s"] / res["copy_s"],
                    res["peak_mb"] - res["rss_after_imports_mb"],
                    (res["peak_mb"] - res["rss_after_imports_mb"]) / size16,
                    r["others"],
                )
            )
    print()
    print(
        "model  params  export      copy_s  first_s  ratio  again_s  ratio  peak+MB  peak/16bit"
        "  others"
    )
    for row in rows:
        s, p, e, c, t, ratio, w, wratio, peak, pr, others = row
        print(
            f"{s:<6} {p:<7} {e:<10} {c:6.2f}  {t:7.2f}  {ratio:5.2f}  {w:7.2f}  {wratio:5.2f}"
            f"  {peak:7.0f}  {pr:10.2f}  {fmt(others, '.2f')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
