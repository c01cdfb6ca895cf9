"""A chaos-engineering harness for Ray Serve.

Parts (see docs and ../shared/DESIGN.md): Cluster backends (``harness.local``), Traffic, History,
Checkers, Faults, Scenarios and Reports. Modules exchange frozen dataclasses, never dicts.
"""

__version__ = "0.1.0"
