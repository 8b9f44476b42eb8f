"""Names of the synthetic world that need no heavy imports (the ``pwm`` CLI lists them in its help)."""

SCENARIOS = ("cruise", "curve", "lead_brake", "cut_in", "parked_obstacle", "oncoming", "lane_change")
TRAIN_SEED_MIN = 1000  # training drives use seeds >= 1000; held-out evaluation drives use seeds below (0 is the demo)
SHIFTS = ("snow", "sodium", "camera_mount")  # distribution shifts for out-of-distribution checks (see ``shift``)
