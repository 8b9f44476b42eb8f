"""Engine cache keys, sidecars and the reuse / rebuild decision (no TensorRT needed: testable anywhere).

A built engine is only valid for the exact ONNX file, precision, builder flags, runtime version and GPU it was built
with. Each engine is stored as ``<graph>.<precision>.<digest>.<ext>`` next to a sidecar ``.json`` that lists every
field of its key, the file's size and sha256 and how long the build took; ``digest`` hashes the key fields, so a
change to any of them yields another file name.

    key = EngineKey("tensorrt", "rollout", onnx_sha, "fp16", "10.3.0", "Orin", "8.7", flags)
    decision = decide(engine_dir, key)          # reuse, or build with a reason such as "TensorRT 10.3.0 -> 10.7.0"
    write_engine(engine_dir, key, plan_bytes)   # temporary names, then renames: never half-written

The runtime looks engines up with ``find_engine`` (any builder flags accepted) and, when only engines for another
GPU, TensorRT version, precision or ONNX file exist, fails with one sentence saying which and how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pwm_model.errors import ModelError
from pwm_model.io_utils import atomic_path, file_sha256

KEY_FORMAT = 1  # bump when the meaning of a key field changes
BUILD_HINT = "rebuild with `python export/build_engine.py --model MODEL_DIR`"
EXTENSIONS = {"tensorrt": ".plan", "onnxruntime": ".onnx", "qdq": ".onnx"}  # qdq: INT8 Q/DQ graphs
_FIELD_WORDS = {
    "backend": "backend", "onnx_sha256": "ONNX file", "precision": "precision", "runtime_version": "version",
    "device": "device", "compute_capability": "compute capability", "flags": "builder flags",
    "key_format": "key format",
}


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on."""

    backend: str  # tensorrt | onnxruntime
    graph: str
    onnx_sha256: str
    precision: str  # fp32 | fp16 | int8
    runtime_version: str  # TensorRT version (or ONNX Runtime version)
    device: str  # GPU name (or the ONNX Runtime execution provider and CPU architecture)
    compute_capability: str  # e.g. "8.7" (Orin); "" for ONNX Runtime
    flags: tuple[tuple[str, Any], ...] = ()  # builder flags as sorted (name, value) pairs (JSON values)
    key_format: int = KEY_FORMAT

    @staticmethod
    def make(backend: str, graph: str, onnx_sha256: str, precision: str, runtime_version: str, device: str,
             compute_capability: str = "", flags: dict[str, Any] | None = None) -> EngineKey:
        items = tuple(sorted((k, _freeze(v)) for k, v in (flags or {}).items()))
        return EngineKey(backend, graph, onnx_sha256, precision, runtime_version, device, compute_capability, items)

    def fields(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = {k: _thaw(v) for k, v in self.flags}
        return d

    def digest(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        return f"{self.graph}.{self.precision}.{self.digest()}{EXTENSIONS.get(self.backend, '.bin')}"

    def target(self) -> str:
        """Human words for where it runs: 'TensorRT 10.3.0 on Orin (sm_87)'."""
        name = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}.get(self.backend, self.backend)
        cc = f" (sm_{self.compute_capability.replace('.', '')})" if self.compute_capability else ""
        return f"{name} {self.runtime_version} on {self.device}{cc}"


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def key_from_fields(d: dict[str, Any]) -> EngineKey:
    """The key recorded in a sidecar (raises KeyError/TypeError for a malformed one)."""
    return EngineKey(str(d["backend"]), str(d["graph"]), str(d["onnx_sha256"]), str(d["precision"]),
                     str(d["runtime_version"]), str(d["device"]), str(d["compute_capability"]),
                     tuple(sorted((k, _freeze(v)) for k, v in dict(d["flags"]).items())), int(d["key_format"]))


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(engine_path.suffix + ".json")


@dataclass
class StoredEngine:
    """An engine file with a readable sidecar."""

    path: Path
    key: EngineKey
    sidecar: dict[str, Any]


def stored_engines(engine_dir: str | os.PathLike[str], backend: str, graph: str) -> list[StoredEngine]:
    """Engines of ``graph`` in ``engine_dir`` whose sidecar parses and whose file exists (newest first)."""
    engine_dir = Path(engine_dir)
    out = []
    if not engine_dir.is_dir():
        return out
    for side in engine_dir.glob(f"{graph}.*.json"):
        try:
            data = json.loads(side.read_text())
            key = key_from_fields(data["key"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        path = side.with_suffix("")
        if key.backend != backend or key.graph != graph or not path.is_file():
            continue
        out.append(StoredEngine(path, key, data))
    out.sort(key=lambda s: float(s.sidecar.get("created_unix", 0.0)), reverse=True)
    return out


def describe_difference(old: EngineKey, new: EngineKey) -> str:
    """What changed between two keys, in words ('TensorRT version 10.3.0 -> 10.7.0; precision fp16 -> int8')."""
    parts = []
    for name in ("onnx_sha256", "precision", "runtime_version", "device", "compute_capability", "flags", "key_format"):
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name == "onnx_sha256":
            parts.append(f"the ONNX file changed (sha256 {a[:12]}... -> {b[:12]}...)")
        elif name == "runtime_version":
            parts.append(f"{'TensorRT' if new.backend == 'tensorrt' else 'ONNX Runtime'} version {a} -> {b}")
        elif name == "flags":
            da, db = dict(a), dict(b)
            diffs = [f"{k} {_thaw(da.get(k))} -> {_thaw(db.get(k))}" for k in sorted(set(da) | set(db))
                     if da.get(k) != db.get(k)]
            parts.append("builder flags " + ", ".join(diffs))
        else:
            parts.append(f"{_FIELD_WORDS[name]} {a or '-'} -> {b or '-'}")
    return "; ".join(parts) or "nothing (same key)"


@dataclass
class Decision:
    """What ``build_engine`` should do for one graph."""

    action: str  # "reuse" | "build"
    path: Path  # where the engine is / will be
    reason: str  # one line for the log


def decide(engine_dir: str | os.PathLike[str], key: EngineKey, *, force: bool = False) -> Decision:
    """Reuse an engine whose key matches exactly and whose file checks out; otherwise say why it must be built."""
    engine_dir = Path(engine_dir)
    path = engine_dir / key.file_name
    if force:
        return Decision("build", path, "rebuild forced (--force)")
    stored = stored_engines(engine_dir, key.backend, key.graph)
    exact = next((s for s in stored if s.key == key), None)
    if exact is not None:
        problem = engine_file_problem(exact)
        if problem is None:
            return Decision("reuse", exact.path, f"reusing {exact.path.name} (key {key.digest()} matches)")
        return Decision("build", path, f"rebuilding: {problem}")
    same_precision = [s for s in stored if s.key.precision == key.precision] or stored
    if not same_precision:
        return Decision("build", path, f"building: no cached engine for {key.graph} ({key.precision})")
    return Decision("build", path, f"rebuilding {key.graph}: {describe_difference(same_precision[0].key, key)}")


def engine_file_problem(stored: StoredEngine) -> str | None:
    """None when the engine file has the size and sha256 its sidecar records, else what is wrong."""
    size = stored.path.stat().st_size
    if size != stored.sidecar.get("bytes"):
        return f"{stored.path.name} has {size} bytes, its sidecar says {stored.sidecar.get('bytes')} (truncated?)"
    digest = file_sha256(stored.path)
    if digest != stored.sidecar.get("sha256"):
        return f"{stored.path.name} does not match the sha256 in its sidecar (corrupt?)"
    return None


def write_engine(engine_dir: str | os.PathLike[str], key: EngineKey, data: bytes,
                 extra: dict[str, Any] | None = None) -> Path:
    """Store an engine and its sidecar (each written to a temporary name and renamed; the engine first, so a
    sidecar never describes a missing or partial file)."""
    engine_dir = Path(engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    path = engine_dir / key.file_name
    side = sidecar_path(path)
    if side.exists():
        side.unlink()  # an engine without a sidecar is ignored until the new sidecar lands
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    record = {"key": key.fields(), "digest": key.digest(), "file": path.name, "bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "created_unix": time.time(),
              "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path


def find_engine(engine_dir: str | os.PathLike[str], want: EngineKey) -> StoredEngine:
    """The newest engine matching ``want`` in everything but the builder flags (which the runtime does not know).

    Raises ModelError with one sentence: no engine at all, or engines built for something else (naming what).
    """
    stored = stored_engines(engine_dir, want.backend, want.graph)
    loose = lambda k: (k.onnx_sha256, k.precision, k.runtime_version, k.device, k.compute_capability,  # noqa: E731
                       k.key_format)
    match = [s for s in stored if loose(s.key) == loose(want)]
    if match:
        problem = engine_file_problem(match[0])
        if problem:
            raise ModelError(f"engine {match[0].path} is unusable: {problem}; {BUILD_HINT}")
        return match[0]
    if not stored:
        raise ModelError(f"no {want.precision} {want.backend} engine for graph {want.graph} in {engine_dir}; "
                         f"{BUILD_HINT} --precision {want.precision}")
    best = next((s for s in stored if s.key.precision == want.precision), stored[0])
    raise ModelError(f"engine {best.path} was built for {best.key.target()} ({best.key.precision}) but this machine "
                     f"needs {want.target()} ({want.precision}): {describe_difference(best.key, want)}; {BUILD_HINT}")
