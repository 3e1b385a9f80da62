"""ork-executor-process: run local commands as tasks, owning their whole process tree.

Importing this package imports nothing heavy; the executor lives in
`ork_executor_process.executor` and is loaded by ork on first use.
"""

__version__ = "0.1.0"
