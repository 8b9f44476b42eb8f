"""``manifest.json`` of a model directory: what each graph is, its file and sha256, its named inputs and outputs
with shapes, dtypes and meanings, the image normalisation and timing, the full config and where the weights came from.

``load_manifest(model_dir)`` reads and checks it (format, config, required graphs, the shapes the config implies) and
``verify_files()`` checks every graph file against its sha256. The backends compare each loaded graph's own inputs
and outputs with the manifest (``check_signature``). Every problem is a ``ModelError`` with one sentence.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pwm_model.config import PwmConfig, from_dict
from pwm_model.data.contract import EGO_DIM, EGO_DIM_WITHOUT_COMMAND_AGE, EGO_DIM_WITHOUT_YAW_RATE
from pwm_model.errors import ConfigError, ModelError
from pwm_model.io_utils import file_sha256, read_json_document

MANIFEST_FILE = "manifest.json"
FORMAT = "pwm-model"
FORMAT_VERSION = 1
ENGINES_DIR = "engines"
EXPORT_HINT = "export it again with `python export/export_onnx.py --checkpoint DIR --out MODEL_DIR`"

ENCODER_GRAPHS = ("ctx_encoder", "dyn_encoder")
PREVIEW_GRAPHS = ("ctx_guide_decoder", "dyn_decoder")
ROLLOUT_GRAPHS = {"unrolled": ("rollout",), "stepwise": ("wm_prefill", "wm_step", "wm_plan")}
EGO_GRAPHS = {"unrolled": ("rollout",), "stepwise": ("wm_prefill", "wm_plan")}  # the graphs with an ``ego`` input
EGO_WIDTHS = (EGO_DIM_WITHOUT_YAW_RATE, EGO_DIM_WITHOUT_COMMAND_AGE, EGO_DIM)  # older models take the first 5 or 6


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output. ``shape`` holds ints, or a string for a dimension that varies."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy name: uint8, int64, float32, ...
    meaning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "meaning": self.meaning}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(str(d["name"]), tuple(d["shape"]), str(d["dtype"]), str(d.get("meaning", "")))


@dataclass
class GraphInfo:
    """One graph of the model directory."""

    name: str
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    role: str = ""
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)  # tensor -> {axis: name}
    profiles: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # tensor -> min/opt/max shapes

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


@dataclass
class Manifest:
    """A loaded, checked ``manifest.json``."""

    model_dir: Path
    data: dict[str, Any]
    config: PwmConfig
    graphs: dict[str, GraphInfo]

    @property
    def rollout_mode(self) -> str:
        return str(self.data["rollout"]["mode"])

    @property
    def image_hw(self) -> tuple[int, int]:
        """(rows, cols) of the uint8 image the encoder graphs take."""
        img = self.data["image"]
        return int(img["input_rows"]), int(img["input_cols"])

    @property
    def ego_width(self) -> int:
        """Entries of the ego vector the graphs take: ``EGO_DIM``, or 6 (5) for a model exported before the command
        age (the yaw rate)."""
        return int(self.graphs[EGO_GRAPHS[self.rollout_mode][0]].input("ego").shape[1])

    @property
    def resize_in_graph(self) -> bool:
        return bool(self.data["image"]["camera_size_in_graph"])

    @property
    def has_preview(self) -> bool:
        return all(g in self.graphs for g in PREVIEW_GRAPHS)

    @property
    def engines_dir(self) -> Path:
        return self.model_dir / ENGINES_DIR

    def path(self, graph: str) -> Path:
        return self.model_dir / self.graphs[graph].file

    def fp32_layers(self) -> list[str]:
        return list(self.data.get("tensorrt", {}).get("fp32_layers", []))

    @property
    def int8(self) -> dict[str, Any]:
        """The ``int8`` section build_engine writes (settings, calibration, each graph's Q/DQ graph); {} if none."""
        return dict(self.data.get("int8", {}))

    def int8_path(self, graph: str) -> Path | None:
        """The Q/DQ graph recorded for ``graph``, checked against its sha256 and against the graph it quantizes; None
        when the sensitivity pass kept the whole graph in float."""
        rec = self.int8.get("graphs", {}).get(graph)
        hint = (f"build it with `python export/build_engine.py --model {self.model_dir} --precision int8 --calib "
                "STORE --backend onnxruntime`")
        if rec is None:
            raise ModelError(f"{self.model_dir} has no INT8 graph for {graph}; {hint}")
        if rec.get("source_sha256") != self.graphs[graph].sha256:
            raise ModelError(f"the INT8 record of {graph} in {MANIFEST_FILE} quantizes an older graph (the model was "
                             f"exported again); {hint}")
        if rec.get("float_graph"):
            return None
        path = self.model_dir / str(rec["file"])
        if not path.is_file() or file_sha256(path) != rec.get("sha256"):
            raise ModelError(f"the INT8 graph {path} named in {MANIFEST_FILE} is missing or corrupt; {hint}")
        return path

    @property
    def surprise_definition(self) -> str:
        """``bit_nll`` when the rollout graphs give the forecast's bit log-probabilities, else the older
        ``weighted_mismatch`` (runtime/surprise.py)."""
        graph = "rollout" if self.rollout_mode == "unrolled" else "wm_prefill"
        names = {t.name for t in self.graphs[graph].outputs}
        return "bit_nll" if names & {"forecast_bit_logp", "next_bit_logp"} else "weighted_mismatch"

    @property
    def surprise_calibration(self) -> dict[str, Any]:
        """The ``surprise_calibration`` section the export writes (percentiles over held-out drives); {} if none."""
        section = dict(self.data.get("surprise_calibration", {}))
        return section if section.get("definition") == self.surprise_definition else {}

    def surprise_warn(self, configured: float) -> float | None:
        """The surprise above which the node warns: ``configured`` when it is >= 0, else the calibrated threshold;
        None (no surprise warning) for a model without a calibration."""
        if configured >= 0:
            return float(configured)
        warn = self.surprise_calibration.get("warn")
        return float(warn) if warn is not None else None

    @property
    def novelty_prior_path(self) -> Path | None:
        """The scene-novelty table (runtime/novelty.py) the export wrote, checked against its sha256; None if none."""
        rec = self.data.get("novelty")
        if not rec:
            return None
        path = self.model_dir / str(rec.get("file", ""))
        if not path.is_file() or file_sha256(path) != rec.get("sha256"):
            raise ModelError(f"the novelty prior {path} named in {MANIFEST_FILE} is missing or corrupt; export the "
                             "model again with --novelty-prior STORE")
        return path

    @property
    def novelty_calibration(self) -> dict[str, Any]:
        """The ``novelty_calibration`` section (percentiles of the scene novelty over held-out drives); {} if none."""
        return dict(self.data.get("novelty_calibration", {})) if self.data.get("novelty") else {}

    def novelty_warn(self, configured: float = -1.0) -> float | None:
        """The scene-novelty warning threshold: ``configured`` when it is >= 0, else the calibrated one; None without
        a prior or a calibration."""
        if configured >= 0:
            return float(configured)
        warn = self.novelty_calibration.get("warn")
        return float(warn) if warn is not None else None

    def record_surprise_calibration(self, section: dict[str, Any]) -> None:
        """Store the ``surprise_calibration`` section in manifest.json (written to a temporary name and renamed)."""
        from pwm_model.io_utils import write_json_atomic

        self.data["surprise_calibration"] = section
        write_json_atomic(self.model_dir / MANIFEST_FILE, self.data)

    def record_int8(self, section: dict[str, Any]) -> None:
        """Store the ``int8`` section in manifest.json (written to a temporary name and renamed)."""
        from pwm_model.io_utils import write_json_atomic

        self.data["int8"] = section
        write_json_atomic(self.model_dir / MANIFEST_FILE, self.data)

    def verify_files(self, graphs: list[str] | None = None) -> None:
        """Every graph file exists and has the manifest's sha256."""
        for name in graphs or list(self.graphs):
            info = self.graphs[name]
            path = self.model_dir / info.file
            if not path.is_file():
                raise ModelError(f"graph file {path} named in {MANIFEST_FILE} is missing; {EXPORT_HINT}")
            digest = file_sha256(path)
            if digest != info.sha256:
                raise ModelError(f"graph file {path} does not match {MANIFEST_FILE} (its sha256 is {digest[:12]}..., "
                                 f"the manifest says {info.sha256[:12]}...): it was changed or is corrupt; "
                                 f"{EXPORT_HINT}")


def required_graphs(rollout_mode: str, forecast_frames: int) -> tuple[str, ...]:
    graphs = ENCODER_GRAPHS + ROLLOUT_GRAPHS[rollout_mode]
    if rollout_mode == "stepwise" and forecast_frames <= 1:
        graphs = tuple(g for g in graphs if g != "wm_step")
    return graphs


def load_manifest(model_dir: str | os.PathLike[str]) -> Manifest:
    """Read and check ``MODEL_DIR/manifest.json`` (not yet the graph files: see ``Manifest.verify_files``)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist")
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model directory: it has no {MANIFEST_FILE}; {EXPORT_HINT}")
    data = read_json_document(path, what="pwm model manifest", error=ModelError, fmt=FORMAT,
                              version=FORMAT_VERSION, hint=EXPORT_HINT)
    try:
        cfg = from_dict(data["config"])
        graphs = {name: _graph_info(name, g) for name, g in data["graphs"].items()}
        mode = str(data["rollout"]["mode"])
        data["image"]["input_rows"], data["image"]["input_cols"], data["image"]["camera_size_in_graph"]
    except ConfigError as exc:
        raise ModelError(f"{path} holds an unusable config: {exc}") from None
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise ModelError(f"{path} is incomplete or malformed ({type(exc).__name__}: {exc}); {EXPORT_HINT}") from None
    if mode not in ROLLOUT_GRAPHS:
        raise ModelError(f"{path} names an unknown rollout mode {mode!r}")
    for key in ("surprise_calibration", "novelty_calibration"):
        section = data.get(key)
        warn = section.get("warn") if isinstance(section, dict) else None
        if key in data and not (isinstance(warn, (int, float)) and math.isfinite(warn)):
            raise ModelError(f"{path}: {key} is malformed (no finite warn threshold); export the model again with "
                             "--surprise-calib DRIVES")
    manifest = Manifest(model_dir, data, cfg, graphs)
    missing = [g for g in required_graphs(mode, cfg.world_model.forecast_frames) if g not in graphs]
    if missing:
        raise ModelError(f"{path} lists no {missing[0]} graph; {EXPORT_HINT}")
    _check_against_config(manifest)
    return manifest


def _graph_info(name: str, g: dict[str, Any]) -> GraphInfo:
    return GraphInfo(name=name, file=str(g["file"]), sha256=str(g["sha256"]),
                     inputs=[TensorSpec.from_dict(t) for t in g["inputs"]],
                     outputs=[TensorSpec.from_dict(t) for t in g["outputs"]], role=str(g.get("role", "")),
                     dynamic_axes=dict(g.get("dynamic_axes", {})), profiles=dict(g.get("profiles", {})))


def _check_against_config(m: Manifest) -> None:
    """The shapes the config implies agree with the manifest's graph signatures."""
    cfg = m.config
    tk, lc, ld = cfg.tokenizer, cfg.tokenizer.ctx_tokens, cfg.tokenizer.dyn_tokens
    h, f, k = cfg.data.history_frames, cfg.world_model.forecast_frames, cfg.data.num_waypoints
    rows, cols = m.image_hw
    want: list[tuple[str, str, str, tuple[int, ...]]] = [
        ("ctx_encoder", "in", "image_rgb", (rows, cols, 3)),
        ("ctx_encoder", "out", "ctx_tokens", (1, lc)),
        ("dyn_encoder", "in", "image_rgb", (rows, cols, 3)),
        ("dyn_encoder", "out", "dyn_tokens", (1, ld)),
    ]
    if m.rollout_mode == "unrolled":
        want += [("rollout", "in", "ctx_tokens", (1, lc)), ("rollout", "in", "dyn_history", (1, h, ld)),
                 ("rollout", "out", "waypoints", (1, k, 3))]
        if f > 0:
            want.append(("rollout", "out", "forecast_tokens", (1, f, ld)))
    else:
        want += [("wm_prefill", "in", "dyn_history", (1, h, ld)), ("wm_plan", "out", "waypoints", (1, k, 3))]
    if "dyn_decoder" in m.graphs:
        want.append(("dyn_decoder", "out", "image_rgb", (tk.dyn_height_px, tk.dyn_width_px, 3)))
    for graph, side, name, shape in want:
        specs = m.graphs[graph].inputs if side == "in" else m.graphs[graph].outputs
        spec = next((t for t in specs if t.name == name), None)
        if spec is None:
            what = "input" if side == "in" else "output"
            raise ModelError(f"{m.model_dir / MANIFEST_FILE}: graph {graph} has no {what} {name!r}; {EXPORT_HINT}")
        if tuple(spec.shape) != shape:
            raise ModelError(f"{m.model_dir / MANIFEST_FILE} does not match its config: {graph} {name} has shape "
                             f"{tuple(spec.shape)}, the config implies {shape}; {EXPORT_HINT}")
    _check_ego(m)


def _check_ego(m: Manifest) -> None:
    """Every graph with an ego input takes the same (1, width), width one of ``EGO_WIDTHS``."""
    shapes = {}
    for graph in EGO_GRAPHS[m.rollout_mode]:
        spec = next((t for t in m.graphs[graph].inputs if t.name == "ego"), None)
        if spec is None:
            raise ModelError(f"{m.model_dir / MANIFEST_FILE}: graph {graph} has no input 'ego'; {EXPORT_HINT}")
        shapes[graph] = tuple(spec.shape)
    for graph, shape in shapes.items():
        if shape not in [(1, w) for w in EGO_WIDTHS] or shape != next(iter(shapes.values())):
            raise ModelError(f"{m.model_dir / MANIFEST_FILE}: graph {graph} ego has shape {shape}, not (1, {EGO_DIM}) "
                             f"(or (1, {EGO_DIM_WITHOUT_COMMAND_AGE}) before the command age, "
                             f"(1, {EGO_DIM_WITHOUT_YAW_RATE}) before the yaw rate) like every ego input; "
                             f"{EXPORT_HINT}")


def check_signature(m: Manifest, graph: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                    where: str) -> None:
    """Compare a loaded graph's inputs/outputs (names, shapes, dtypes) with the manifest; ``where`` names the file.

    A dimension that is a string on either side (a varying axis) matches any size.
    """
    info = m.graphs[graph]
    for side, want, got in (("input", info.inputs, inputs), ("output", info.outputs, outputs)):
        got_by_name = {t.name: t for t in got}
        want_names = [t.name for t in want]
        extra = [t.name for t in got if t.name not in want_names]
        for spec in want:
            actual = got_by_name.get(spec.name)
            if actual is None:
                raise ModelError(f"{where} does not match {MANIFEST_FILE}: it has no {side} {spec.name!r}; "
                                 f"{EXPORT_HINT}")
            if actual.dtype != spec.dtype:
                raise ModelError(f"{where} does not match {MANIFEST_FILE}: {side} {spec.name!r} is {actual.dtype} in "
                                 f"the graph and {spec.dtype} in the manifest; {EXPORT_HINT}")
            if len(actual.shape) != len(spec.shape) or any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(actual.shape, spec.shape)):
                raise ModelError(f"{where} does not match {MANIFEST_FILE}: {side} {spec.name!r} has shape "
                                 f"{tuple(actual.shape)} in the graph and {tuple(spec.shape)} in the manifest; "
                                 f"{EXPORT_HINT}")
        if extra:
            raise ModelError(f"{where} does not match {MANIFEST_FILE}: it has an unlisted {side} {extra[0]!r}; "
                             f"{EXPORT_HINT}")
