"""BigQuery executor plugin for ork.

Deliberately empty: ``ork`` imports this package's registration module (``plugin``) on
every start, and ``google.cloud.bigquery`` costs about a second to import, so it is loaded
only by the executor, the tracker and the ``ork bigquery`` command, on first use.
"""

__all__: list[str] = []
