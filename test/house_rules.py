"""The layering rules of docs/ARCHITECTURE.md, checked over the import graph (read with ``ast``, never run).

``violations(root)`` returns one line per broken rule; ``test/test_house_rules.py`` asserts that the repository has
none and that each rule fires on a tree made to break it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 500
PACKAGES = ("pwm_model", "pwm_ros")  # installed packages; export/ and bench/ are scripts run from the checkout
SCRIPT_DIRS = ("export", "bench")
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "builtin_interfaces", "sensor_msgs", "nav_msgs", "geometry_msgs",
               "std_msgs", "visualization_msgs", "diagnostic_msgs", "lifecycle_msgs", "rcl_interfaces",
               "launch", "launch_ros", "launch_testing", "cv_bridge", "rosbag2_py")
# what runtime/ may import at module level from the rest of pwm_model: the base floor and the torch-free contract
RUNTIME_ALLOWED = ("pwm_model.config", "pwm_model.errors", "pwm_model.io_utils", "pwm_model.geometry",
                   "pwm_model.runtime", "pwm_model.data.contract", "pwm_model.data.schema")
TORCH_MODULES = ("torch", "torchvision", "safetensors")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (``from a import b`` names ``a.b`` when that is a module)
    line: int
    module_level: bool  # executed on import (not inside a function or an ``if TYPE_CHECKING:`` block)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(root: Path) -> Iterator[Path]:
    for top in (*PACKAGES, *SCRIPT_DIRS):
        base = root / top
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def _is_module(root: Path, dotted: str) -> bool:
    p = root.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _absolute(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(root: Path, path: Path) -> list[Import]:
    source = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            level = module_level
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                level = False
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                level = False
            if isinstance(child, ast.Import):
                out.extend(Import(source, a.name, child.lineno, level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(source, is_package, child)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append(Import(source, sub if _is_module(root, sub) else base, child.lineno, level))
            visit(child, level)

    visit(tree, True)
    return out


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(root: str | Path) -> list[str]:
    """Every broken rule under ``root`` as ``path:line: what`` (empty when the house is in order)."""
    root = Path(root)
    found: list[str] = []
    for path in python_files(root):
        rel = path.relative_to(root)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines, over the {MAX_MODULE_LINES}-line limit for a module")
        for imp in imports_of(root, path):
            where = f"{rel}:{imp.line}: {imp.source} imports {imp.target}"
            src, dst = imp.source, imp.target
            if _under(src, "pwm_model.train") and _under(dst, "pwm_model.eval"):
                found.append(f"{where} (train never imports eval)")
            if _under(src, "pwm_model.eval") and _under(dst, "pwm_model.train"):
                found.append(f"{where} (eval never imports train)")
            if _under(src, "pwm_model.tokenizer", "pwm_model.world_model") and _under(dst, "pwm_model.train"):
                found.append(f"{where} (the models never import the training wing)")
            if _under(src, "pwm_model.runtime") and imp.module_level:
                if _under(dst, *TORCH_MODULES):
                    found.append(f"{where} at module level (the runtime is torch-free)")
                elif _under(dst, "pwm_model") and not _under(dst, *RUNTIME_ALLOWED):
                    found.append(f"{where} at module level (the runtime imports only the base floor and the "
                                 "data contract)")
            if not _under(src, "pwm_ros", "bench") and _under(dst, *ROS_MODULES):
                found.append(f"{where} (only pwm_ros talks ROS)")
    return found
