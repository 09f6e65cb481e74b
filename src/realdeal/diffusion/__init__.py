"""Diffusion pieces independent of any network: noise schedule, denoiser wrapper, samplers."""
