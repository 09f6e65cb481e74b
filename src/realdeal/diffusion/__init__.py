"""Diffusion pieces independent of any network and of any data layout: the noise schedule,
the denoiser wrapper, the samplers and their registry."""
