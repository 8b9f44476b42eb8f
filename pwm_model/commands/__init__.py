"""Sub-commands of the ``pwm`` CLI (one module each; see ``pwm_model/cli.py``)."""
