"""Build TensorRT engines (or ONNX Runtime optimized graphs) for an exported model directory, keyed and cached.

    python export/build_engine.py --model out/models/pwm-tiny-onnx [--precision fp16|int8] [--backend onnxruntime]

The builder is ``pwm_model.export.engines``; ``--help`` lists every option and docs/DEPLOY.md explains them. On
the vehicle run it after ``colcon build`` and sourcing the workspace; here with ``.venv/bin/python``.
"""

import sys

from pwm_model.export.engines import main

if __name__ == "__main__":
    sys.exit(main())
