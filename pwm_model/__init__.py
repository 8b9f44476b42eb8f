"""pwm: a driving world model that forecasts the front camera as discrete tokens, then plans."""

__version__ = "0.1.0"
