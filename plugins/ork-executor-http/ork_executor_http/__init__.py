"""ork executors for HTTP APIs.

``http`` sends one request and takes its output from the response JSON. ``http_async``
sends a kickoff request, hands the returned run id to ork as a deferred job, and the
``http_async`` job tracker polls a status URL until the job reaches a terminal state.
"""

__version__ = "0.1.0"
