"""Data in: NIfTI I/O, invertible preprocessing, prepared datasets and the built-in cohort."""
