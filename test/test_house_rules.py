"""The house rules hold on the repository, and each rule fires on a tree made to break it (ast, not grep)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test.conftest import REPO_ROOT
from test.house_rules import imports_of, violations


def test_the_repository_keeps_the_house_rules():
    broken = violations(REPO_ROOT)
    assert not broken, "house rules broken:\n" + "\n".join(broken)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in ("pwm_model", "pwm_model/train", "pwm_model/eval", "pwm_model/runtime", "pwm_model/data",
                "pwm_model/tokenizer", "pwm_model/world_model", "pwm_ros"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


CLEAN = {
    "pwm_model/data/contract.py": "import numpy as np\n",
    "pwm_model/data/clips.py": "import torch\n",
    "pwm_model/runtime/runner.py": "from pwm_model.data import contract\nfrom . import types\n"
                                   "def load():\n    import torch\n    from pwm_model.world_model import model\n",
    "pwm_model/runtime/types.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
    "pwm_model/train/loop.py": "from pwm_model.world_model import model\n",
    "pwm_model/world_model/model.py": "import torch\n",
    "pwm_ros/node.py": "import rclpy\nfrom sensor_msgs.msg import Image\n",
    "bench/node.py": "import rclpy\n",
}


def test_a_clean_tree_passes(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(("rel", "text", "why"), [
    ("pwm_model/train/tb.py", "def f():\n    from pwm_model.eval import forecast\n", "train never imports eval"),
    ("pwm_model/eval/x.py", "from ..train import loop\n", "eval never imports train"),
    ("pwm_model/tokenizer/model.py", "def f():\n    from pwm_model.train.loop import x\n",
     "the models never import the training wing"),
    ("pwm_model/world_model/m.py", "import pwm_model.train.loop\n", "the models never import the training wing"),
    ("pwm_model/runtime/backends.py", "import torch\n", "the runtime is torch-free"),
    ("pwm_model/runtime/backends.py", "from safetensors import safe_open\n", "the runtime is torch-free"),
    ("pwm_model/runtime/frames.py", "from pwm_model.data.clips import ClipStore\n", "data contract"),
    ("pwm_model/runtime/graphs.py", "from pwm_model.world_model.model import PolicyWorldModel\n", "data contract"),
    ("pwm_model/eval/node_check.py", "def f():\n    import rclpy\n", "only pwm_ros talks ROS"),
    ("export/tool.py", "from nav_msgs.msg import Path\n", "only pwm_ros talks ROS"),
    ("pwm_model/data/big.py", "x = 1\n" * 501, "over the 500-line limit"),
])
def test_each_rule_fires_when_broken(tmp_path, rel, text, why):
    found = violations(_tree(tmp_path, {**CLEAN, rel: text}))
    assert len(found) == 1 and why in found[0] and found[0].startswith(rel), found


def test_relative_and_from_imports_resolve_to_modules(tmp_path):
    root = _tree(tmp_path, CLEAN)
    names = {(i.target, i.module_level) for i in imports_of(root, root / "pwm_model/runtime/runner.py")}
    assert names == {("pwm_model.data.contract", True), ("pwm_model.runtime.types", True), ("torch", False),
                     ("pwm_model.world_model.model", False)}
