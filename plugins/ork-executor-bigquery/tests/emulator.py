"""The tests' name for the emulator helpers, which live in the package so that
``examples/warehouse_refresh`` (and users) can start the emulator too."""

from ork_executor_bigquery.emulator import (
    Emulator,
    EmulatorError,
    bq_emulator,
    client_environment,
    ensure_spatial_extension,
    spatial_extension_file,
    stop_process_group,
)

__all__ = [
    "Emulator",
    "EmulatorError",
    "bq_emulator",
    "client_environment",
    "ensure_spatial_extension",
    "spatial_extension_file",
    "stop_process_group",
]
