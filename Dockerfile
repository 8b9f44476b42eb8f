# syntax=docker/dockerfile:1
# pwm_ros: the planning node with ONNX Runtime (and TensorRT where the base has it) on ROS 2.
#
#   x86_64, ROS 2 Kilted (default):
#     docker build -t pwm:kilted .
#   Jetson Orin, JetPack 6.1/6.2 (L4T r36.4: CUDA 12.6, TensorRT 10.3, Ubuntu 22.04 -> ROS 2 Humble), on the Jetson:
#     docker build -t pwm:jetson --build-arg BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 .
#   Run (model directory mounted read-only, camera topic remapped through the launch argument):
#     docker run --rm -it --network host --ipc host -v $PWD/out/models/pwm-tiny-onnx:/models/pwm:ro pwm:kilted \
#       ros2 launch pwm_ros pwm.launch.py model_dir:=/models/pwm camera_topic:=/my_camera/image_raw
#   Tests that need a full ROS install (launch_testing, cv_bridge):  docker build --target test .
# See docs/ROBOT.md.

ARG BASE_IMAGE=ros:kilted-ros-base

# ---------------------------------------------------------------------------------------------------------------
# deps: ROS 2 (installed from packages.ros.org when the base has none, e.g. l4t-jetpack), message packages,
# cv_bridge, launch, rosbag2 and the Python packages of setup.py.
FROM ${BASE_IMAGE} AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# ros:* images set ROS_DISTRO; a bare L4T / JetPack 6 base is Ubuntu 22.04, whose ROS 2 is Humble.
ENV ROS_DISTRO=${ROS_DISTRO:-humble} \
    DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1
RUN if [ ! -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then \
        apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gnupg && \
        curl -fsSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key \
            -o /usr/share/keyrings/ros-archive-keyring.gpg && \
        echo "deb [arch=$(dpkg --print-architecture) signed-by=/usr/share/keyrings/ros-archive-keyring.gpg]" \
             "http://packages.ros.org/ros2/ubuntu $(. /etc/os-release && echo "${UBUNTU_CODENAME}") main" \
            > /etc/apt/sources.list.d/ros2.list && \
        apt-get update && apt-get install -y --no-install-recommends "ros-${ROS_DISTRO}-ros-base"; \
    fi \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-numpy python3-yaml python3-opencv python3-pytest python3-colcon-common-extensions \
        "ros-${ROS_DISTRO}-rclpy" "ros-${ROS_DISTRO}-sensor-msgs" "ros-${ROS_DISTRO}-nav-msgs" \
        "ros-${ROS_DISTRO}-geometry-msgs" "ros-${ROS_DISTRO}-std-msgs" "ros-${ROS_DISTRO}-visualization-msgs" \
        "ros-${ROS_DISTRO}-diagnostic-msgs" "ros-${ROS_DISTRO}-lifecycle-msgs" "ros-${ROS_DISTRO}-rosgraph-msgs" \
        "ros-${ROS_DISTRO}-launch-ros" "ros-${ROS_DISTRO}-launch-testing-ros" "ros-${ROS_DISTRO}-cv-bridge" \
        "ros-${ROS_DISTRO}-rosbag2" "ros-${ROS_DISTRO}-rmw-fastrtps-cpp" \
    && rm -rf /var/lib/apt/lists/*
# Not in apt: rosbags (bag I/O), ONNX and ONNX Runtime (CPU here; the TensorRT backend uses the base's TensorRT).
RUN python3 -m pip install "rosbags>=0.10" "onnx>=1.15" "onnxruntime>=1.17" \
    && (python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
        || echo "no TensorRT Python bindings in this base: the tensorrt backend is unavailable, onnxruntime works")

# ---------------------------------------------------------------------------------------------------------------
# build: colcon builds the ament_python package into /opt/pwm/install.
FROM deps AS build
WORKDIR /ws/src/pwm_ros
COPY package.xml setup.py setup.cfg ./
COPY resource resource
COPY pwm_model pwm_model
COPY pwm_ros pwm_ros
COPY export export
COPY launch launch
COPY config config
WORKDIR /ws
RUN source "/opt/ros/${ROS_DISTRO}/setup.bash" \
    && colcon build --base-paths src --install-base /opt/pwm/install --event-handlers console_direct+

# ---------------------------------------------------------------------------------------------------------------
# runtime: the install space, a non-root user and an entrypoint that sources ROS.
FROM deps AS runtime
COPY --from=build /opt/pwm/install /opt/pwm/install
COPY docker/entrypoint.sh /usr/local/bin/pwm-entrypoint
RUN chmod 0755 /usr/local/bin/pwm-entrypoint \
    && (id -u pwm >/dev/null 2>&1 || useradd --create-home --shell /bin/bash pwm) \
    && usermod -aG video pwm
USER pwm
WORKDIR /home/pwm
ENTRYPOINT ["/usr/local/bin/pwm-entrypoint"]
CMD ["ros2", "launch", "pwm_ros", "pwm.launch.py"]

# ---------------------------------------------------------------------------------------------------------------
# test (optional target): the tests that skip without a full ROS install run here (launch_testing, cv_bridge).
FROM runtime AS test
USER root
RUN python3 -m pip install --index-url https://download.pytorch.org/whl/cpu torch \
    && python3 -m pip install safetensors
USER pwm
RUN mkdir -p /home/pwm/src
COPY --chown=pwm:pwm test /home/pwm/src/test
COPY --chown=pwm:pwm launch /home/pwm/src/launch
COPY --chown=pwm:pwm config /home/pwm/src/config
COPY --chown=pwm:pwm docs /home/pwm/src/docs
COPY --chown=pwm:pwm pwm_ros /home/pwm/src/pwm_ros
COPY --chown=pwm:pwm pwm_model /home/pwm/src/pwm_model
COPY --chown=pwm:pwm export /home/pwm/src/export
WORKDIR /home/pwm/src
# torch (CPU) only here: the tests export a tiny random model to drive the node with.
RUN /usr/local/bin/pwm-entrypoint python3 -m pytest -q -p no:cacheprovider \
        test/test_conversions.py test/test_launch.py test/test_ros_params.py test/test_ros_node.py
