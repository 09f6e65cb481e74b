"""realdeal: make generated 3D brain MRIs look real.

The package follows the pipeline: ``data`` (NIfTI I/O, preprocessing, prepared datasets,
the built-in synthetic cohort), ``models``, ``diffusion``, ``training``, ``metrics`` and
``report``. The ``realdeal`` command is a thin layer over these modules (see ``cli``).
"""

__version__ = "0.1.0"
