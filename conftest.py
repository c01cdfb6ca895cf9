"""Project-wide pytest settings. The harness's fixtures and options come from its pytest plugin
(``harness.pytest_plugin``, registered as the ``serve_chaos`` entry point when the package is installed)."""

from hypothesis import HealthCheck, settings

# CI machines are small and shared with a running Ray cluster: no per-example deadline.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
