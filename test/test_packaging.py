"""colcon builds the install tree that `ros2 run` and `ros2 launch` look for; the CLI explains itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pwm_model.cli import COMMANDS, build_parser

from .conftest import BIN_DIR, REPO_ROOT

SOURCE_ITEMS = ("package.xml", "setup.py", "setup.cfg", "resource", "pwm_model", "pwm_ros", "export", "launch",
                "config")


def _colcon() -> str:
    exe = BIN_DIR / "colcon"
    if not exe.exists():
        pytest.skip("colcon is not installed in this environment (pip install colcon-core colcon-ros)")
    return str(exe)


def test_colcon_build_install_tree(tmp_path: Path) -> None:
    colcon = _colcon()
    src = tmp_path / "ws" / "src" / "pwm_ros"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in SOURCE_ITEMS:
        path = REPO_ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / item)
    ws = tmp_path / "ws"
    result = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    install = ws / "install" / "pwm_ros"
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "pwm_ros").is_file()
    assert (install / "share" / "pwm_ros" / "package.xml").is_file()
    for script in ("pwm", "pwm_node", "pwm_replay", "pwm_sim"):
        exe = install / "lib" / "pwm_ros" / script
        assert exe.is_file(), f"lib/pwm_ros/{script} missing: `ros2 run pwm_ros {script}` would not find it"
        assert exe.stat().st_mode & 0o111
    assert (install / "share" / "pwm_ros" / "launch" / "pwm.launch.py").is_file()
    assert (install / "share" / "pwm_ros" / "config" / "pwm.yaml").is_file()
    for launch_file in (REPO_ROOT / "launch").glob("*.py"):
        assert (install / "share" / "pwm_ros" / "launch" / launch_file.name).is_file()
    site = next((install / "lib").glob("python3*/site-packages"))
    assert (site / "pwm_model" / "config.py").is_file()
    assert (site / "pwm_ros" / "__init__.py").is_file()


def test_cli_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "pwm_model.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    parser = build_parser()
    registered = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public accessor
    for name in registered:
        assert name in result.stdout
    assert set(registered) == set(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_help_explains_itself(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pwm_model.cli", command, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: pwm " + command in result.stdout
    assert len(result.stdout.splitlines()) >= 3


def test_bad_command_exits_nonzero() -> None:
    result = subprocess.run([sys.executable, "-m", "pwm_model.cli", "no-such-command"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2


def test_no_top_level_export_package_is_installed(tmp_path: Path) -> None:
    """The export scripts are scripts: the installed distribution brings pwm_model and pwm_ros, no ``export``."""
    probe = ("import importlib.util, pwm_model.export.engines; "
             "print(importlib.util.find_spec('export') is None)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("script", ["export_onnx.py", "build_engine.py"])
def test_the_export_scripts_run_from_anywhere(tmp_path: Path, script: str) -> None:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "export" / script), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
