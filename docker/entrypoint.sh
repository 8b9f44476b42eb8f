#!/bin/bash
# Source ROS 2 and the pwm_ros install space, then run the command (default: the launch file).
set -e
ros_setup=""
for candidate in "/opt/ros/${ROS_DISTRO}/setup.bash" "/opt/ros/${ROS_DISTRO}/install/setup.bash"; do
    if [ -f "${candidate}" ]; then ros_setup="${candidate}"; break; fi
done
if [ -z "${ros_setup}" ]; then
    echo "pwm-entrypoint: no ROS 2 setup.bash for ROS_DISTRO='${ROS_DISTRO}' under /opt/ros" >&2
    exit 1
fi
# shellcheck disable=SC1090
source "${ros_setup}"
# shellcheck disable=SC1091
source /opt/pwm/install/setup.bash
exec "$@"
