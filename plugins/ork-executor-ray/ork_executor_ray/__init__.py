"""ork executors for Ray: ``ray_actor`` (warm actor pool) and ``ray_job`` (Ray Jobs, deferred).

Importing this package imports neither Ray nor the executors: ork imports `plugin` at every
start, and Ray only when a workflow first uses one of these executors.
"""
