"""Cloud Run executor plugin for ork.

Kept free of imports on purpose: ``google.cloud.run_v2`` is heavy and should load only
when a Cloud Run task actually runs, not whenever ork discovers its plugins.
"""
