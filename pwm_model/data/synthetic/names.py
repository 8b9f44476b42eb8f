"""Names of the synthetic world that need no heavy imports (the ``pwm`` CLI lists them in its help)."""

SCENARIOS = ("cruise", "curve", "lead_brake", "cut_in", "parked_obstacle", "oncoming", "lane_change", "pull_out")
PRECURSOR_FAMILIES = ("lead_brake", "cut_in", "pull_out")  # events logged with a precursor and an onset time
TRAIN_SEED_MIN = 1000  # training drives use seeds >= 1000; held-out evaluation drives use seeds below (0 is the demo)
SHIFTS = ("snow", "sodium", "camera_mount")  # distribution shifts for out-of-distribution checks (see ``shift``)
