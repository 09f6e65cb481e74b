"""The refiner's patch inference: the plan of windows (where, in which order, with which
masks), the training masks, the masked conditioning, the windowed refinement loop and the
seam score. Built on :mod:`realdeal.diffusion` (schedule, denoiser, samplers), which knows
nothing of windows or volumes."""
