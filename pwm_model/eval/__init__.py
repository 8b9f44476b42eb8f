"""Evaluation: metrics (numpy only), baselines and the ``pwm eval`` report."""
