"""pwm_ros: the ROS 2 face of pwm (the only package that imports rclpy and message packages).

node.py         ``pwm_node``, the lifecycle node: camera -> PolicyRunner -> Path, markers, previews, diagnostics
params.py       its parameters: defaults from RuntimeConfig + NodeParams, ranges, validation, config/pwm.yaml
conversions.py  messages <-> numpy (images incl. Bayer and cv_bridge fallback, Path, markers, diagnostics)
worker.py       latest-frame-only worker thread;  diagnostics.py  counters, rates, latency percentiles, levels
odometry.py     odometry samples -> the ego input at a camera stamp (speed, acceleration, yaw rate, plausibility)
overlay.py      the planned path drawn through the camera model;  replay.py  ``pwm_replay``: bag playback + recorder
sim_bridge.py   ``RosPlanner``: the closed loop's planner over ROS 2 (lock-step or realtime);  sim.py  ``pwm_sim``
"""
