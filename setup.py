"""pwm: pip-installable Python project and ROS 2 ament_python package ``pwm_ros``.

``pip install -e .[train,ros,dev]`` for development (see the Makefile); ``colcon build`` in a ROS workspace.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pwm_ros"

# The ROS 2 packages pwm_ros uses, as the PyPI wheels ros-<distro>-<name>: extra `ros` is Kilted (the .venv of
# `make test`), extra `ros-jazzy` is Jazzy (the .venv-jazzy of `make test-jazzy`). One venv holds one distribution:
# both pin the same underlying ros-* packages. Humble has no such wheels (a ROS install or the Docker image).
ROS_PACKAGES = (
    "rclpy",
    "rmw-fastrtps-cpp",
    "sensor-msgs",
    "nav-msgs",
    "geometry-msgs",
    "std-msgs",
    "visualization-msgs",
    "diagnostic-msgs",
    "lifecycle-msgs",
    "rcl-lifecycle",
)


def ros_wheels(distro: str) -> list[str]:
    return [f"ros-{distro}-{name}" for name in ROS_PACKAGES]


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Policy World Model: a driving world model that forecasts the front camera, then plans",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["pwm_model", "pwm_model.*", "pwm_ros", "pwm_ros.*"]),
    package_data={"pwm_model": ["runtime/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy",
        "pyyaml",
        "opencv-python-headless",
        "rosbags>=0.10",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "mcap",
    ],
    extras_require={
        "train": ["torch==2.13.0", "safetensors", "matplotlib", "tensorboard", "tqdm"],
        "ros": ros_wheels("kilted"),
        "ros-jazzy": ros_wheels("jazzy"),
        # cyclonedds: the other vendor of test/test_cyclone_interop.py; binary wheels only where it has them (elsewhere
        # it builds against an installed Cyclone DDS C library, and that test skips without it)
        "dev": ["pytest", "pytest-timeout", "ruff", "mcap", "mcap-ros2-support", "colcon-core", "colcon-ros",
                "cyclonedds==11.0.1; platform_system == 'Linux' and platform_machine == 'x86_64' and "
                "python_version >= '3.10' and python_version < '3.14'"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "pwm = pwm_model.cli:main",
            "pwm_node = pwm_ros.node:main",
            "pwm_replay = pwm_ros.replay:main",
            "pwm_sim = pwm_ros.sim:main",
        ],
    },
)
