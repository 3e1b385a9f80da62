"""The run loop's signal handlers: they stop the run, and give the caller's handlers back."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from ork_core.scheduler import STOP_SIGNALS, _install_signal_handlers


class _Recorder:
    def __init__(self) -> None:
        self.stops: list[int] = []

    def request_stop(self, signum: int) -> None:
        self.stops.append(signum)


def test_the_loop_takes_sigint_sigterm_sighup_and_restores_the_callers_handlers() -> None:
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("the loop's handler should have had this signal")

    before = {sig: signal.signal(sig, mine) for sig in STOP_SIGNALS}
    recorder = _Recorder()
    try:
        async def main() -> None:
            remove = _install_signal_handlers(asyncio.get_running_loop(), recorder)  # type: ignore[arg-type]
            try:
                for sig in STOP_SIGNALS:
                    signal.raise_signal(sig)
                    await asyncio.sleep(0.05)
            finally:
                remove()

        asyncio.run(main())
        assert recorder.stops == list(STOP_SIGNALS)
        assert all(signal.getsignal(sig) is mine for sig in STOP_SIGNALS)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_the_ork_command_ignores_stop_signals_once_it_is_done() -> None:
    """Python restores the default actions before it finishes exiting: a SIGTERM in that time,
    after the run's last commit, would otherwise turn ork's exit code into death by signal."""
    import subprocess
    import sys

    probe = (
        "import signal, sys, ork_core.cli as cli\n"
        "sys.argv = ['ork', '--version']\n"
        "try:\n"
        "    cli.entry()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[True, True, True]", done.stdout + done.stderr


def test_a_stop_signal_during_a_plugin_import_is_ork_stopping_not_the_plugin_failing(tmp_path: Any) -> None:
    """SIGTERM while `ork resume` imports a storage or executor module: exit 143, not "failed to import"."""
    import pytest

    from ork_core.errors import ExecutorImportError, StopSignal
    from ork_core.registry import import_target

    (tmp_path / "stopped_mod.py").write_text("from ork_core.errors import StopSignal\nraise StopSignal(143)\n")
    (tmp_path / "exiting_mod.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(StopSignal) as stopped:
        import_target("stopped_mod:X", search_path=tmp_path)
    assert stopped.value.code == 143
    with pytest.raises(ExecutorImportError, match="SystemExit: 3"):
        import_target("exiting_mod:X", search_path=tmp_path)
