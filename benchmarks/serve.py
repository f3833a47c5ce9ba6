"""Bounded load test of ``merkit serve`` on localhost: requests per second and p50/p95 latency.

    python benchmarks/serve.py [--checkpoint DIR] [--requests 100] [--concurrency 1,4] [--max-seconds 60] [--threads 1]

Starts ``python -m merkit serve CHECKPOINT`` on 127.0.0.1 (a free port, nothing else is
contacted) as a child process, waits for ``GET /health``, sends a few warm-up requests, then
for each concurrency level sends at most ``--requests`` ``POST /predict`` requests, each one
20-utterance text conversation, from that many client threads, and stops after
``--max-seconds`` whatever happens. Prints one JSON object (and a Markdown table) with
requests, failures, requests per second and p50/p95 latency; exits 1 if any request failed
or the server did not start. The server is stopped at the end.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: train a tiny one)")
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level (at most)")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated numbers of client threads")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit per concurrency level")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (merkit serve --threads)")
    parser.add_argument("--warmup", type=int, default=3, help="requests before timing")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    levels = [int(part) for part in args.concurrency.split(",") if part.strip()]

    with tempfile.TemporaryDirectory(prefix="merkit-serve-bench-") as scratch:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(scratch))
        port = free_port()
        url = f"http://{HOST}:{port}"
        log = open(Path(scratch) / "server.log", "w+")
        command = [sys.executable, "-m", "merkit", "serve", str(checkpoint), "--host", HOST, "--port", str(port),
                   "--threads", str(args.threads), "--max-utterances", str(len(TURNS))]  # fmt: skip
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(url, server, timeout=180)
            warm = load(url, args.warmup, 1, args.max_seconds)
            results = [load(url, args.requests, level, args.max_seconds) for level in levels]
        except RuntimeError as exc:
            log.seek(0)
            print(f"benchmark failed: {exc}\n--- server log ---\n{log.read()[-3000:]}", file=sys.stderr)
            return 1
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()

    report = {
        "conversation_utterances": len(TURNS),
        "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny late-fusion (MiniLM text, example conversations)",
        "server_threads": args.threads,
        "warmup_failed": warm["failed"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "levels": results,
    }
    print(json.dumps(report, indent=2))
    print("\n| clients | requests | failed | req/s | utterances/s | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['concurrency']} | {row['requests']} | {row['failed']} | {row['requests_per_second']} | "
              f"{row['utterances_per_second']} | {row['p50_ms']} | {row['p95_ms']} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = warm["failed"] + sum(row["failed"] for row in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
