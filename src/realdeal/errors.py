"""Exception types. The command line turns any ``RealDealError`` into one line and exit 2."""

from __future__ import annotations

import os


class RealDealError(Exception):
    """Base class for errors a user can act on (bad input, bad configuration)."""


class InputError(RealDealError):
    """A specific input file or folder is unusable; the message names it and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class ConfigError(RealDealError):
    """A configuration value or combination of values is invalid."""


class InstallationError(RealDealError):
    """A package realdeal needs is missing or does not work (a broken torch/torchvision pair,
    say); the message names the package, its version and the fix."""


class TrainingDiverged(RealDealError):
    """A training run's gradient stayed non-finite (NaN or inf); the run stopped without
    changing its weights, and its checkpoint is from before."""
