"""``pwm demo``: the shipped model drives the sample drive through the live ROS 2 node, then the report.

No rclpy here: the node (``pwm_node``) and the replay (``pwm_replay``) run as subprocesses, in a ROS 2 domain of
their own, and the evaluation runs in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = "replay the sample drive through the ROS 2 node, evaluate live and offline, write out/demo/report.html"
DESCRIPTION = """The project's main command (`make demo`), step by step:

  1. the sample drive: out/sample_drive (synthetic, seed 0, held out from training; `pwm gen-data` if missing)
  2. the shipped model models/pwm-tiny exported to ONNX in out/models/pwm-tiny-onnx (again when its weights
     changed: their sha256 is compared with the one the export's manifest.json recorded), its forecast surprise
     calibrated on four other held-out synthetic drives (the node's warning threshold)
  3. pwm_node started with use_sim_time and autostart (configure + activate), ONNX Runtime on the CPU
  4. pwm_replay plays the drive over ROS 2 with /clock and records the node's plans into out/demo/predictions
  5. the recorded plans scored (out/demo/live/metrics.json), the same drive evaluated offline (out/demo/), the
     report written and the summary table printed, live and offline L2 at 3 s side by side (within 5 %), the
     verdict on every headline metric and the node's diagnostics over the run (from the recorded /diagnostics)
  6. closed loop: pwm_sim --start-node drives 3 held-out scenarios with the node in lock-step beside CTRA and the
     expert (out/demo/sim/report.html); its EPDMS joins the summary

Writes out/demo/report.html, out/demo/metrics.json, out/demo/plans.csv and out/demo/overlay.mp4. The node and
the replay use ROS_DOMAIN_ID from the environment, else a private domain chosen from this process id."""

GEN_DATA_ARGS = ("--scenes", "1", "--seconds", "30", "--seed", "0")  # as `make data`: seed 0 is held out
AGREEMENT_PCT = 5.0  # live and offline l2_3s must agree within this (issue acceptance)
NODE_STOP_S = 15.0
# the export calibrates the forecast surprise (the node's warning threshold) on other held-out synthetic drives
SURPRISE_CALIB, SURPRISE_CALIB_FRAMES = ("synthetic:1", "synthetic:2", "synthetic:3", "synthetic:4"), 200
SIM_SCENARIOS, SIM_SECONDS = 3, 13.0  # the closed-loop step: a short suite (seeds 200..202)
DEMO_FORECAST_EVERY = 10  # forecasts decoded for PSNR/SSIM: one a second of the drive keeps the demo quick


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output directory (default out/demo)")
    parser.add_argument("--drive", default="out/sample_drive", metavar="DIR",
                        help="the drive to replay (default out/sample_drive; generated with seed 0 if missing)")
    parser.add_argument("--checkpoint", default="models/pwm-tiny", metavar="DIR",
                        help="checkpoint to export and run (default models/pwm-tiny)")
    parser.add_argument("--model-dir", default="out/models/pwm-tiny-onnx", metavar="DIR",
                        help="exported model directory (default out/models/pwm-tiny-onnx)")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1.0: real time)")
    parser.add_argument("--node-timeout-s", type=float, default=180.0,
                        help="how long the node may take to load and warm up before the replay gives up")


# ----------------------------------------------------------------------------------------------------
# Steps

_PRINT_LOCK = threading.Lock()


def _say(text: str) -> None:
    """One whole line on stdout (the subprocess pumps print from their own threads)."""
    with _PRINT_LOCK:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()
        self._step_t0 = self.t0

    def start(self, text: str) -> None:
        self.n += 1
        self._step_t0 = time.monotonic()
        _say(f"[{self.n}/{self.total}] {text}")

    def done(self, text: str = "") -> None:
        _say(f"      {text + ' ' if text else ''}({time.monotonic() - self._step_t0:.1f} s)")


def _bin(name: str) -> str:
    """A console script of this installation (the venv's bin), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        from pwm_model.errors import PwmError

        raise PwmError(f"{name} is not installed: run `make venv` (or pip install -e '.[ros]')")
    return found


def sample_drive(drive: Path) -> Path:
    """The sample drive's bag, generated with `pwm gen-data` (seed 0) when there is none."""
    from pwm_model.data.bag import find_bags
    from pwm_model.errors import DataError

    if not (drive.exists() and _bags(drive)):
        r = subprocess.run([sys.executable, "-m", "pwm_model.cli", "gen-data", "--out", str(drive), *GEN_DATA_ARGS],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DataError(f"writing the sample drive failed: {_last_line(r.stderr) or 'pwm gen-data exited with '}"
                            f"{'' if r.stderr.strip() else r.returncode}")
    bags = find_bags([drive])
    return bags[0]


def _bags(drive: Path) -> list[Path]:
    from pwm_model.data.bag import find_bags
    from pwm_model.errors import DataError

    try:
        return find_bags([drive])
    except DataError:
        return []


def export_is_current(checkpoint: Path, model_dir: Path) -> bool:
    """Whether ``model_dir`` was exported from these very weights: every ``*.safetensors`` of the checkpoint has
    the sha256 the manifest's ``source`` recorded for it (the config is stored inside the weights' checkpoint)."""
    from pwm_model.io_utils import file_sha256

    try:
        manifest = json.loads((model_dir / "manifest.json").read_text())
        source = manifest["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    weights = sorted(checkpoint.glob("*.safetensors"))
    return bool(weights) and all(source.get(f"{w.stem}_sha256") == file_sha256(w) for w in weights)


def export_if_needed(checkpoint: Path, model_dir: Path) -> str:
    """Export ``checkpoint`` to ``model_dir`` unless it already holds an export of these very weights."""
    from pwm_model.errors import ModelError

    if not checkpoint.is_dir():
        raise ModelError(f"checkpoint {checkpoint} does not exist")
    missing = [f"{n}.safetensors" for n in ("tokenizer", "world_model")
               if not (checkpoint / f"{n}.safetensors").is_file()]
    if missing:
        raise ModelError(f"checkpoint {checkpoint} has no {' or '.join(missing)}: the demo needs a trained tokenizer "
                         "and world model")
    if export_is_current(checkpoint, model_dir) and _has_surprise_calibration(model_dir):
        return "up to date (exported from these weights)"
    cmd = [sys.executable, "-m", "pwm_model.export.onnx", "--checkpoint", str(checkpoint), "--out", str(model_dir),
           "--surprise-calib", *SURPRISE_CALIB, "--surprise-calib-frames", str(SURPRISE_CALIB_FRAMES)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not export_is_current(checkpoint, model_dir):
        raise ModelError(f"exporting {checkpoint} to ONNX failed: {_last_line(r.stderr) or r.returncode}")
    return "exported"


def _has_surprise_calibration(model_dir: Path) -> bool:
    try:
        return bool(json.loads((model_dir / "manifest.json").read_text()).get("surprise_calibration"))
    except (OSError, ValueError, AttributeError):
        return False


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].removeprefix("error: ") if lines else ""


def ros_env() -> dict[str, str]:
    """The environment of the node and the replay: a ROS domain of their own, discovery on this machine."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))  # 101..200: apart from the tests' 1..100
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_node_params(path: Path, model_dir: Path) -> Path:
    """The node's --params-file: the exported model, bag time, configure + activate at start-up."""
    from pwm_model.io_utils import write_text_atomic

    text = ("# pwm_node parameters for `pwm demo` (every other parameter keeps its default, config/pwm.yaml)\n"
            "pwm_node:\n  ros__parameters:\n"
            f"    model_dir: {json.dumps(str(model_dir.resolve()))}\n"
            "    use_sim_time: true\n    autostart: true\n    backend: onnxruntime\n    device: cpu\n")
    write_text_atomic(path, text)
    return path


class Process:
    """A subprocess whose output goes to a log file and, optionally, to the terminal with a prefix."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str], echo: Callable[[str], bool] | None = None,
                 prefix: str = "") -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(echo, prefix), daemon=True)
        self._thread.start()

    def _pump(self, echo: Callable[[str], bool] | None, prefix: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self.lines.append(line.rstrip())
            if echo is not None and echo(line):
                _say(f"      {prefix}{line.rstrip()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 5) -> str:
        return " | ".join(self.lines[-n:])

    def stop(self, timeout_s: float = NODE_STOP_S) -> int:
        """SIGINT (a clean shutdown), then SIGTERM and SIGKILL if it does not end; returns the exit status."""
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._thread.join(5.0)
        self._log.close()
        return self.proc.wait()


def live_run(bag: Path, model_dir: Path, out: Path, rate: float, node_timeout_s: float) -> Path:
    """Start the node, replay ``bag`` through it while recording its plans; returns the predictions bag."""
    from pwm_model.errors import PwmError

    env = ros_env()
    params = write_node_params(out / "pwm_node.params.yaml", model_dir)
    node = Process([_bin("pwm_node"), "--ros-args", "--params-file", str(params)], out / "logs" / "pwm_node.log",
                   env, echo=lambda line: "error" in line.lower() or "loaded" in line.lower(), prefix="node: ")
    predictions = out / "predictions"
    try:
        _say(f"      node starting (ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, log {node.log_path})")
        replay = Process([_bin("pwm_replay"), str(bag), "--record", str(predictions), "--rate", f"{rate:g}",
                          "--wait-s", f"{node_timeout_s:g}"], out / "logs" / "pwm_replay.log", env,
                         echo=lambda line: line.startswith("pwm_replay:") or "error" in line.lower(),
                         prefix="")
        try:
            deadline = time.monotonic() + node_timeout_s + 600.0
            while replay.alive():
                if not node.alive():
                    raise PwmError(f"pwm_node exited ({node.proc.returncode}) during the replay: {node.tail()}")
                failed = next((ln for ln in node.lines if "configure failed" in ln), None)
                if failed:
                    raise PwmError(f"pwm_node could not load {model_dir}: {failed.split('configure failed: ')[-1]}")
                if time.monotonic() > deadline:
                    raise PwmError("the replay did not finish in time: see " + str(replay.log_path))
                time.sleep(0.2)
        finally:
            code = replay.stop()
        recorded = any(ln.startswith("pwm_replay: recorded") for ln in replay.lines) and (
            predictions / "metadata.yaml").is_file()
        if code != 0 and not recorded:
            raise PwmError(f"pwm_replay failed ({code}): {replay.tail(3)}")
        if code != 0:  # it finished and closed the recording, then failed on its way out
            _say(f"      pwm_replay exited with status {code} after closing the recording (log: {replay.log_path})")
        if not any("recorded" in ln and "trajectory" in ln for ln in replay.lines):
            raise PwmError(f"the node published no plan during the replay: {node.tail()}")
    finally:
        node.stop()
    return predictions


def run(args: argparse.Namespace) -> int:
    from pwm_model.errors import ConfigError
    from pwm_model.eval.bag_summary import format_table
    from pwm_model.eval.drives import evaluate_drives, write_outputs
    from pwm_model.io_utils import write_json_atomic

    if not args.rate > 0:
        raise ConfigError(f"--rate must be positive, got {args.rate}")
    out, drive, model_dir = Path(args.out), Path(args.drive), Path(args.model_dir)
    steps = Steps(6)
    steps.start(f"sample drive {drive}")
    bag = sample_drive(drive)
    steps.done(str(bag))
    steps.start(f"model {args.checkpoint} -> {model_dir}")
    steps.done(export_if_needed(Path(args.checkpoint), model_dir))
    steps.start(f"live: pwm_node + pwm_replay at {args.rate:g}x, recording the plans into {out / 'predictions'}")
    predictions = live_run(bag, model_dir, out, args.rate, args.node_timeout_s)
    steps.done()
    steps.start("scoring the recorded plans")
    _, live = evaluate_drives([str(bag)], model=str(model_dir), out=out / "live", predictions=[str(predictions)],
                              video=False, progress=False)
    write_json_atomic(out / "live" / "metrics.json", live)  # its figures join the offline report's table
    steps.done(f"{live['plans']} plans, l2_3s {_num(live.get('l2_3s'))} m")
    steps.start("offline evaluation of the same drive (report, video)")
    evals, offline = evaluate_drives([str(bag)], model=str(model_dir), out=out, forecast_every=DEMO_FORECAST_EVERY,
                                     progress="      ")
    steps.done()
    steps.start(f"closed loop: the node drives {SIM_SCENARIOS} held-out scenarios (pwm_sim, lock-step) beside CTRA "
                "and the expert")
    closed = closed_loop(model_dir, out / "sim")
    steps.done(f"EPDMS {_num(closed.get('epdms'))}, CTRA {_num(closed.get('CTRA_epdms'))}, expert "
               f"{_num(closed.get('expert_epdms'))}: {out / 'sim' / 'report.html'}")
    diff = _diff_pct(live.get("l2_3s"), offline.get("l2_3s"))
    agree = diff is not None and diff <= AGREEMENT_PCT
    node_diagnostics = (live.get("bags") or [{}])[0].get("node_diagnostics")
    offline.update(live_l2_3s=live.get("l2_3s"), live_plans=live.get("plans"),
                   live_latency_p50_ms=live.get("latency_p50_ms"), live_offline_l2_3s_diff_pct=diff,
                   live_offline_agree=agree, live_node_diagnostics=node_diagnostics)
    agreement = (f"Live (ROS 2 node, {live.get('plans')} plans) and offline ({offline.get('plans')} plans) L2 up to "
                 f"3 s: {_num(live.get('l2_3s'))} m vs {_num(offline.get('l2_3s'))} m, "
                 + (f"within {diff:.1f} %." if agree else f"{_num(diff, 1)} % apart (more than {AGREEMENT_PCT:g} %)."))
    closed_note = (f"Closed loop (pwm_sim through the node, {closed.get('scenarios')} held-out scenarios of "
                   f"{SIM_SECONDS:g} s, reactive traffic): EPDMS {_num(closed.get('epdms'))} against CTRA's "
                   f"{_num(closed.get('CTRA_epdms'))} and the expert's {_num(closed.get('expert_epdms'))}; driving "
                   f"score {_num(closed.get('driving_score'))}, at-fault collisions "
                   f"{closed.get('collisions_at_fault')} (sim/report.html has the drives).")
    offline.update(closed_loop=closed)
    write_outputs(out, evals, offline, title=f"pwm demo: {Path(args.checkpoint).name} on the sample drive",
                  compare={"live node": live}, notes=[agreement, closed_note])
    _say("")
    _say(format_table(offline, {"live node": live}))
    _say(agreement)
    _say(diagnostics_line(node_diagnostics))
    _say(closed_note)
    _say(f"done in {time.monotonic() - steps.t0:.0f} s: {out / 'report.html'} and {out / 'metrics.json'}")
    return 0


def closed_loop(model_dir: Path, out: Path) -> dict[str, Any]:
    """``pwm_sim --start-node``: the node drives a few held-out scenarios in lock-step; its JSON line."""
    from pwm_model.errors import ModelError

    cmd = [_bin("pwm_sim"), "--model", str(model_dir), "--start-node", "--planner", "ctra", "--planner", "expert",
           "--scenarios", str(SIM_SCENARIOS), "--seconds", f"{SIM_SECONDS:g}", "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ros_env())
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise ModelError(f"the closed-loop run failed: {_last_line(r.stderr) or r.returncode}")
    return json.loads(lines[-1])


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def diagnostics_line(d: dict[str, Any] | None) -> str:
    """The node's diagnostics over the live run in one line (what the report's section shows in full)."""
    if not d:
        return "node diagnostics: none recorded (the recording holds no /diagnostics status of the planner)"
    levels = ", ".join(f"{k} {v}" for k, v in (d.get("levels") or {}).items())
    problems = "; ".join(f"{k} ({v})" for k, v in list((d.get("problems") or {}).items())[:3])
    return (f"node diagnostics: {d.get('messages')} statuses ({levels}), final level {d.get('final_level')}: "
            f"{d.get('final_message')}" + (f"; most named: {problems}" if problems else ""))


def _diff_pct(live: Any, offline: Any) -> float | None:
    if live is None or offline is None or offline == 0:
        return None
    return round(100.0 * abs(live - offline) / abs(offline), 2)
