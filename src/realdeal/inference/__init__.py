"""Running trained models over many inputs: splitting the work between torchrun ranks."""
