"""Registers the {{ cookiecutter.executor_name }} executor with ork: the module the ``ork`` entry point names.

ork imports this module each time it starts (``ork executors``, ``ork run`` …), so it
imports nothing but ``ork``. The executor is registered as a ``"module:Class"`` string,
which ork imports the first time a workflow uses ``executor: {{ cookiecutter.executor_name }}``: listing
executors never pays for your executor's dependencies.
"""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"
"""The ork plugin API versions this plugin works with; ork skips it, with a message, otherwise."""


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("{{ cookiecutter.executor_name }}", "{{ cookiecutter.__package_name }}.executor:{{ cookiecutter.__class_prefix }}Executor")
{%- if cookiecutter.kind == "deferred" %}


@hookimpl
def ork_register_job_trackers(register: Register) -> None:
    register("{{ cookiecutter.executor_name }}", "{{ cookiecutter.__package_name }}.tracker:{{ cookiecutter.__class_prefix }}JobTracker")
{%- endif %}
