"""Show: slice figures and reports."""
