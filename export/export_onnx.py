"""Export a checkpoint to a model directory (ONNX graphs + manifest.json), checked against PyTorch on real frames.

    python export/export_onnx.py --checkpoint models/pwm-tiny --out out/models/pwm-tiny-onnx [--camera-size WxH]

The exporter is ``pwm_model.export.onnx``; ``--help`` lists every option and docs/DEPLOY.md explains them. Run it
with the Python that has pwm installed (``.venv/bin/python`` after ``make venv``; on the vehicle after
``colcon build`` and sourcing the workspace).
"""

import sys

from pwm_model.export.onnx import main

if __name__ == "__main__":
    sys.exit(main())
