"""Trained models applied to volumes: the autoencoder (encode / reconstruct), the LDM (sample)
and the refiner (refine)."""
