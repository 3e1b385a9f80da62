"""The implementation of `ork.testing`; plugin authors import from ``ork.testing``.

- `harness`: run one task through the real scheduler in a scratch project (``run_task``),
  and inline plugins (``plugin_manager``, ``inline_plugin``);
- `probe`: what importing a registration module costs, checked in a fresh interpreter;
- `crash`: a real crash between a job's submit and its commit, then ``ork resume``;
- `conformance`: ``ExecutorConformance``, the checks built on the three above.
"""
