"""Bounded load test of ``merkit serve`` on localhost: requests per second and p50/p95 latency, per serving path.

    python benchmarks/serve.py [--checkpoint DIR] [--paths torch,onnx,onnx-int8,onnx-int8x2] [--requests 100]
                               [--concurrency 1,4] [--max-seconds 60] [--threads 1]

Exports the checkpoint once with ``merkit export --onnx`` (fp32) and once with ``--quantize int8``,
then for each path starts ``python -m merkit serve`` on 127.0.0.1 (a free port, nothing else is
contacted) as a child process, waits for ``GET /health``, sends a few warm-up requests, and for each
concurrency level sends at most ``--requests`` ``POST /predict`` requests, each one 20-utterance text
conversation, from that many client threads, stopping after ``--max-seconds`` whatever happens.
Paths: ``torch`` (the PyTorch model and encoder, ``--backend torch``), ``onnx`` (fp32 graphs in ONNX
Runtime), ``onnx-int8`` (int8 text encoder), ``onnx-int8x2`` (the same with ``--replicas 2``). All paths
run in the same invocation, so their ratios hold on a noisy machine. Prints one JSON object and a
Markdown table; exits 1 if any request failed or a server did not start.

Without ``--checkpoint`` it trains a tiny one first: MiniLM features of the packaged example
conversations and a late-fusion model, two epochs (the request cost, MiniLM on 20
utterances plus the model, does not depend on how well the model learnt).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TURNS = [
    "You will not believe it, I got the job!", "Wait, the one at the museum? No way!", "Yes! I start on Monday.",
    "That is wonderful, I am so proud of you.", "I was so nervous during the interview.", "You always get nervous.",
    "Well, this time it was worse, they asked about my old boss.", "What did you say?", "The truth, more or less.",
    "And they still hired you?", "Apparently honesty pays.", "I wish my boss were that fair.",
    "Is he still making you stay late?", "Every single day, and he never says thank you.", "That is outrageous.",
    "I know. I am thinking of quitting.", "Then quit! Come work at the museum.", "Ha, as what, a statue?",
    "You would be a very grumpy statue.", "Fine, let us celebrate your job first.",
]  # fmt: skip
CONVERSATION = {"dialogue_id": "benchmark", "utterances": [{"speaker": "AB"[i % 2], "text": t} for i, t in enumerate(TURNS)]}


def tiny_checkpoint(folder: Path) -> Path:
    """MiniLM features of the example conversations and a late-fusion model trained for two epochs."""
    from merkit.data import read_data
    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction
    from merkit.training.engine import train_model

    corpus = read_data(REPO / "src" / "merkit" / "examples" / "conversations.jsonl").corpus
    run_extraction(corpus, get_extractor("minilm"), out=folder / "store", use_cache=False, progress=False, log=None)
    train_model(str(folder / "store"), "late-fusion", out=folder / "run", overrides=["epochs=2"], progress=False)
    return folder / "run" / "seed0" / "best"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


def load(url: str, requests: int, concurrency: int, max_seconds: float) -> dict:
    """``requests`` POST /predict calls from ``concurrency`` threads, stopping at ``max_seconds``."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    issued = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal issued
        with httpx.Client(timeout=60) as session:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() >= stop_at:
                        return
                    issued += 1
                started = time.perf_counter()
                try:
                    response = session.post(url + "/predict", json=CONVERSATION)
                    ok = response.status_code == 200 and len(response.json()["utterances"]) == len(TURNS)
                    problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - started
                with lock:
                    if problem:
                        failures.append(problem)
                    else:
                        latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def percentile(q: float) -> float | None:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None

    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(failures),
        "failed": len(failures),
        "first_failures": failures[:3],
        "seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 2) if wall > 0 else None,
        "utterances_per_second": round(len(latencies) * len(TURNS) / wall, 1) if wall > 0 else None,
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p95_ms": percentile(0.95),
    }


PATHS = {  # name → (export folder, --backend, --replicas)
    "torch": ("fp32", "torch", 1),
    "onnx": ("fp32", "onnx", 1),
    "onnx-int8": ("int8", "onnx", 1),
    "onnx-int8x2": ("int8", "onnx", 2),
}


def serve_and_load(folder: Path, backend: str, replicas: int, args: argparse.Namespace, levels: list[int], log_path: Path) -> tuple[dict, list[dict]]:
    """One server for ``folder`` with ``backend`` and ``replicas``: the warm-up and one result per concurrency level."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "merkit", "serve", str(folder), "--host", HOST, "--port", str(port), "--threads", str(args.threads),
               "--max-utterances", str(len(TURNS)), "--backend", backend, "--replicas", str(replicas), "--max-queue", str(4 * max(levels))]  # fmt: skip
    with open(log_path, "w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(url, server, timeout=240)
            warm = load(url, args.warmup, 1, args.max_seconds)
            return warm, [load(url, args.requests, level, args.max_seconds) for level in levels]
        except RuntimeError as exc:
            log.seek(0)
            raise RuntimeError(f"{exc}\n--- server log ---\n{log.read()[-3000:]}") from None
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: train a tiny one)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated serving paths among {', '.join(PATHS)}")
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level (at most)")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated numbers of client threads")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit per concurrency level")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per prediction of the server (merkit serve --threads)")
    parser.add_argument("--warmup", type=int, default=3, help="requests before timing")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    paths = [part.strip() for part in args.paths.split(",") if part.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path {unknown[0]!r}; choose among {', '.join(PATHS)}")
    from merkit.onnx_export import export_onnx

    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="merkit-serve-bench-") as scratch:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(scratch))
        folders = {}
        for kind in sorted({PATHS[p][0] for p in paths}):
            folders[kind] = Path(scratch) / f"export-{kind}"
            export_onnx(checkpoint, folders[kind], quantize="int8" if kind == "int8" else "none")
        for path in paths:
            kind, backend, replicas = PATHS[path]
            try:
                warm, results = serve_and_load(folders[kind], backend, replicas, args, levels, Path(scratch) / f"{path}.log")
            except RuntimeError as exc:
                print(f"benchmark failed for {path}: {exc}", file=sys.stderr)
                return 1
            failed += warm["failed"] + sum(row["failed"] for row in results)
            rows += [{"path": path, "replicas": replicas, **row} for row in results]

    baseline = {row["concurrency"]: row for row in rows if row["path"] == paths[0]}
    for row in rows:
        first = baseline.get(row["concurrency"])
        if first and first["requests_per_second"] and row["requests_per_second"]:
            row[f"throughput_vs_{paths[0]}"] = round(row["requests_per_second"] / first["requests_per_second"], 2)
    report = {
        "conversation_utterances": len(TURNS),
        "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny late-fusion (MiniLM text, example conversations)",
        "server_threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "levels": rows,
    }
    print(json.dumps(report, indent=2))
    print(f"\n| path | replicas | clients | requests | failed | req/s | × {paths[0]} | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['replicas']} | {row['concurrency']} | {row['requests']} | {row['failed']} | "
              f"{row['requests_per_second']} | {row.get(f'throughput_vs_{paths[0]}')} | {row['p50_ms']} | {row['p95_ms']} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
