"""{{ cookiecutter.description }}

ork imports this package (for ``plugin.py``) every time it starts, so keep imports out of
this file: the executor is imported only when a workflow uses it.
"""
