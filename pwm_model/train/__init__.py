"""Training: checkpoints (safetensors + config), the stage loops and their progress output."""
