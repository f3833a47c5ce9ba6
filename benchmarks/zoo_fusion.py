"""The zoo's fused recording default against its own two tracks, and the zoo models' cold start (issue #38).

    python benchmarks/zoo_fusion.py [--data ../shared/data] [--work runs/zoo-fusion] [--budget full|reduced] [--rows DIR] [--skip-fusion] [--skip-cold]

1. The test cases of the shipped ``fused-meld-ravdess`` entry (its ``recipe.yaml``; :mod:`merkit.fusion_cases`): the
   RAVDESS recordings of test actors 19–24 (the voice carries the emotion, the words do not) and MELD test dialogues
   read by espeak-ng (the words carry it, the voice does not). For each: the words track, the voice track, the fused
   track with the entry's rule (chosen on validation by ``merkit zoo build``), and, as the simple baseline beside
   it, the unfitted fusion (the plain geometric mean of the two tracks: α = 0.5, γ = 0, no typicality floor, T = 1).
   ``--rows`` scores the rows ``merkit zoo build`` kept of the same cases (its newest) instead of recomputing both tracks. Checks: fused ≥ voice − 1 on RAVDESS, fused ≥ words − 1 on espeak
   (accuracy and weighted F1).
2. Cold start: wall time and peak memory (RSS) of one ``merkit predict NAME FILE`` process to its answer, from a
   warm disk cache (the joined encoder weights already in ~/.cache/merkit), beside ``merkit --version`` (the
   interpreter and the CLI alone).
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_helpers import join_clips, speak  # noqa: E402


def fusion_table(data: Path, work: Path, budget: str, rows: Path | None = None) -> list[dict]:
    from merkit.fusion import FusionSpec, load_fused
    from merkit.fusion_cases import Rows, espeak_case, ravdess_case, scores, track_rows
    from merkit.zoo import DEFAULT_RECORDING, FUSION, locate
    from merkit.zoo_build import read_recipe

    folder = locate(DEFAULT_RECORDING)
    spec = FusionSpec.model_validate(json.loads((folder / FUSION).read_text()))
    plan = read_recipe(folder / "recipe.yaml")["cases"]
    reduce = plan.get("reduced", {}) if budget == "reduced" else {}
    if rows is not None:  # the rows the build kept of the same test cases
        newest = lambda n: max(rows.glob(f"rows*-{n}-*.json"), key=lambda p: p.stat().st_mtime)  # noqa: E731
        found_rows = {n: Rows.from_json(json.loads(newest(n).read_text())) for n in ("ravdess-test", "espeak-meld-test")}
    else:
        cases = [
            ravdess_case("ravdess-test", data / "ravdess", reduce.get("test_actors", plan["test_actors"]), work / "ravdess-test", spec.voice_map,
                         emotions=plan.get("test_emotions")),
            espeak_case("espeak-meld-test", data / "meld", "test", reduce.get("meld_dialogues_test", plan["meld_dialogues_test"]), plan["seed"],
                        work / "espeak-test"),
        ]  # fmt: skip
        with load_fused(DEFAULT_RECORDING, device="cpu", threads=1) as fused:
            found_rows = {case.name: track_rows(fused, case, log=lambda line: print(line, file=sys.stderr)) for case in cases}
    table = []
    for name, found in found_rows.items():
        row = {"case": name, "lines": len(found.truth), "one_segment": sum(found.matched)}
        for which in ("words", "voice"):
            row[which] = scores(found, which, spec.labels)
        row["fused"] = scores(found, "fused", spec.labels, spec)
        plain = spec.model_copy(update={"alpha": 0.5, "gamma": 0.0, "typicality_floor": 0.0, "temperature": 1.0})
        row["fused α=0.5, T=1"] = scores(found, "fused", spec.labels, plain)
        table.append(row)
    print(f"\nfused-meld-ravdess: α {spec.alpha}, γ {spec.gamma}, θ {spec.typicality_floor}, T {spec.temperature} (chosen on validation)\n")
    print("| case | lines (one segment) | track | accuracy | weighted F1 | macro F1 |")
    print("|---|---|---|---|---|---|")
    for row in table:
        for which in ("words", "voice", "fused", "fused α=0.5, T=1"):
            s = row[which]
            print(f"| {row['case']} | {row['lines']} ({row['one_segment']}) | {which} | {s['accuracy']:.2f} | {s['weighted_f1']:.2f} | {s['macro_f1']:.2f} |")
    for row in table:
        reference = "voice" if row["case"].startswith("ravdess") else "words"
        for metric in ("accuracy", "weighted_f1"):
            gap = row["fused"][metric] - row[reference][metric]
            print(f"{row['case']}: fused − {reference} {metric} = {gap:+.2f} ({'ok' if gap >= -1 else 'MORE THAN 1 POINT BELOW'})")
    return table


def cold(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process running ``command`` to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def cold_start_table(work: Path, repeats: int) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    talk = work / "talk.txt"
    talk.write_text("Ana: You will not believe it, I got the job!\nBen: No way! That's amazing.\nAna: I start on Monday.\n")
    clip = speak("Kids are talking by the door.", work / "clip.wav")
    (work / "clip.json").write_text(json.dumps([{"speaker": "A", "audio": str(clip)}]))
    recording = work / "short.wav"
    join_clips([clip, speak("I am so happy to see you again!", work / "clip2.wav")], recording)
    merkit = [sys.executable, "-m", "merkit"]
    commands = {
        "merkit --version (baseline: interpreter + CLI)": [*merkit, "--version"],
        "merkit predict text-meld talk.txt": [*merkit, "predict", "text-meld", str(talk), "-q", "--threads", "1"],
        "merkit predict talk.txt (default: text-meld)": [*merkit, "predict", str(talk), "-q", "--threads", "1"],
        "merkit predict text-iemocap talk.txt": [*merkit, "predict", "text-iemocap", str(talk), "-q", "--threads", "1"],
        "merkit predict voice-ravdess clip.json": [*merkit, "predict", "voice-ravdess", str(work / "clip.json"), "-q", "--threads", "1"],
        "merkit predict short.wav (fused default, 2 segments)": [*merkit, "predict", str(recording), "-q", "--threads", "1"],
    }
    rows = []
    for name, command in commands.items():
        measured = [cold(command) for _ in range(repeats)]
        rows.append({"command": name, "seconds": [round(s, 2) for s, _ in measured], "peak_mib": [round(m) for _, m in measured]})
    print("\n| command (one process, to its answer) | wall s (each run) | peak RSS MiB |")
    print("|---|---|---|")
    for row in rows:
        print(f"| `{row['command']}` | {' / '.join(f'{s:.2f}' for s in row['seconds'])} | {' / '.join(map(str, row['peak_mib']))} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("runs/zoo-fusion"))
    parser.add_argument("--budget", choices=("full", "reduced"), default="full")
    parser.add_argument("--skip-fusion", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--rows", type=Path, help="score the rows the build kept (e.g. runs/zoo-build/fusion/fused-meld-ravdess/full) instead of recomputing the tracks")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    result = {}
    if not args.skip_fusion:
        result["fusion"] = fusion_table(args.data, args.work, args.budget, args.rows)
    if not args.skip_cold:
        result["cold_start"] = cold_start_table(args.work / "cold", args.repeats)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
