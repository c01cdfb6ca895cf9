# Nothing to do: the harness's pytest plugin (entry point serve_chaos) gives the fixtures serve_chaos_stack,
# serve_chaos_scenario, serve_chaos_stack_config and serve_chaos_report_dir, and reads pyproject.toml's settings.
