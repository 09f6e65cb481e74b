"""Training: the one engine for all models, checkpoints, EMA, torch.distributed helpers."""
