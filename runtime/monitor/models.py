"""Which model files a monitor's numbers come from, and when a change of them re-maps the scenes.

A yearly series is only comparable when one model made every number in it. A bundle can hold
several models of one network — ``model.onnx`` (FP32) and, after ``coal-export --fp16 --int8``,
``model.fp16.onnx`` and ``model.int8.onnx`` — and ``coal-run`` picks among them by backend and
``--precision`` (``auto``: INT8 on the CPU, FP16 on CUDA and TensorRT). So the ledger records,
for every scene:

- the **model state** it was mapped under: the bundle id and the SHA-256 of every model file
  the configured ``[run] backend`` and ``precision`` could run (:func:`candidate_keys`);
- the **model actually run**: backend, file (an ONNX file, or a TensorRT engine under
  ``engines/``), its SHA-256 and precision (:meth:`ModelSet.identify`).

**The rule.** Before each run the monitor hashes those candidate files again; a scene mapped
under another state is mapped again, with the reason saying what changed (e.g. "model changed:
model.int8.onnx added"). So after ``coal-export --int8`` every year is re-mapped by the model
``auto`` now picks, instead of old years keeping FP32 results while new scenes use INT8. The
rule is deliberately conservative: with ``backend = "auto"`` on a machine without a GPU, adding
an FP16 model also re-maps everything once (the monitor cannot know which machine a cluster
worker is), which costs time but never mixes models. Scenes recorded before the ledger kept
model files are re-mapped once ("model not recorded"). The report names, per year, the files
and precisions behind its numbers and warns when a year or the series mixes models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import sha256_file
from ..bundle import Bundle

#: Bundle file key -> precision of the ONNX model it names.
PRECISION_OF_KEY: dict[str, str] = {"onnx": "fp32", "onnx_fp16": "fp16", "onnx_int8": "int8"}
_KEY_OF_PRECISION = {v: k for k, v in PRECISION_OF_KEY.items()}


def candidate_keys(backend: str, precision: str) -> tuple[str, ...]:
    """The bundle file keys a run with ``backend`` and ``precision`` may run (see coal-run).

    Example:
        >>> candidate_keys("cpu", "auto"), candidate_keys("auto", "fp32")
        (('onnx', 'onnx_int8'), ('onnx',))
    """
    if precision in _KEY_OF_PRECISION:
        return (_KEY_OF_PRECISION[precision],)
    if backend == "cpu":
        return ("onnx", "onnx_int8")
    if backend in ("cuda", "tensorrt"):
        return ("onnx", "onnx_fp16")
    return ("onnx", "onnx_fp16", "onnx_int8")


@dataclass
class ModelSet:
    """The model files a configured run may use, hashed once per monitor run.

    Attributes:
        bundle: the loaded bundle.
        files: ``{file name: {"sha256": hex, "precision": "fp32" | "fp16" | "int8"}}`` of the
            candidate files present in the bundle.
    """

    bundle: Bundle
    files: dict[str, dict[str, str]]
    _engine_sha: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def state(self) -> str:
        """The model state recorded with every scene (JSON: bundle id and file hashes)."""
        return json.dumps({"bundle": self.bundle.bundle_id,
                           "files": {k: v["sha256"] for k, v in sorted(self.files.items())}}, sort_keys=True)

    def change_from(self, recorded: str | None) -> str | None:
        """Why ``recorded`` (a scene's model state) differs from this one, or None when equal."""
        if recorded == self.state:
            return None
        if not recorded:
            return "model not recorded (mapped before the ledger kept model files)"
        try:
            old = json.loads(recorded)
            before, now = dict(old.get("files", {})), {k: v["sha256"] for k, v in self.files.items()}
        except (ValueError, AttributeError, TypeError):
            return "model changed"
        parts = []
        if old.get("bundle") != self.bundle.bundle_id:
            parts.append(f"bundle {old.get('bundle')} → {self.bundle.bundle_id}")
        parts += [f"{n} added" for n in sorted(set(now) - set(before))]
        parts += [f"{n} removed" for n in sorted(set(before) - set(now))]
        parts += [f"{n} re-exported" for n in sorted(set(now) & set(before)) if now[n] != before[n]]
        return "model changed: " + (", ".join(parts) or "other files")

    def identify(self, details: dict[str, Any] | None) -> dict[str, str | None]:
        """The model a scene ran, from coal-run's ``backend.details``: file, SHA-256, precision.

        ONNX Runtime names its ``model`` file; TensorRT its ``engine`` (a plan file under
        ``engines/``, whose precision is that of the ONNX file it was built from). A runner that
        reports neither (a custom runner) gives Nones.
        """
        details = details or {}
        name = details.get("model")
        if isinstance(name, str) and name in self.files:
            return {"file": name, **self.files[name]}
        if isinstance(name, str):  # a file outside the candidates (should not happen): hash it
            path = self.bundle.path / Path(name).name
            key = next((k for k, v in self.bundle.files.items() if v == path.name), None)
            return {"file": path.name, "sha256": self._hash(path), "precision": PRECISION_OF_KEY.get(key or "")}
        engine = details.get("engine")
        if isinstance(engine, str):
            path = self.bundle.engines_dir / Path(engine).name
            return {"file": f"engines/{path.name}", "sha256": self._hash(path),
                    "precision": f"{_engine_precision(self.bundle, path.name)} (TensorRT)"}
        return {"file": None, "sha256": None, "precision": None}

    def _hash(self, path: Path) -> str | None:
        if path.name not in self._engine_sha:
            try:
                self._engine_sha[path.name] = sha256_file(path)
            except OSError:
                return None
        return self._engine_sha[path.name]


def model_set(bundle: Bundle, backend: str, precision: str) -> ModelSet:
    """Hash the bundle's candidate model files for a run with ``backend`` and ``precision``.

    Example:
        >>> ms = model_set(load_bundle("models/tapin"), "auto", "auto")   # doctest: +SKIP
        >>> sorted(ms.files)                                               # doctest: +SKIP
        ['model.fp16.onnx', 'model.int8.onnx', 'model.onnx']
    """
    files: dict[str, dict[str, str]] = {}
    for key in candidate_keys(backend, precision):
        if bundle.has(key):
            files[bundle.files[key]] = {"sha256": sha256_file(bundle.file(key)), "precision": PRECISION_OF_KEY[key]}
    return ModelSet(bundle, files)


def _engine_precision(bundle: Bundle, engine_file: str) -> str:
    """Precision of an engine: that of the ONNX file its manifest entry was built from."""
    try:
        entries = json.loads((bundle.engines_dir / "manifest.json").read_text(encoding="utf-8")).get("engines", [])
    except (OSError, ValueError, AttributeError):
        entries = []
    for e in entries:
        if isinstance(e, dict) and e.get("file") == engine_file:
            key = next((k for k, v in bundle.files.items() if v == e.get("onnx")), None)
            return PRECISION_OF_KEY.get(key or "", "unknown")
    return "unknown"
