"""`ork serve` in a real browser: headless Chromium (Debian's), driven by Playwright.

Screenshots go to ``$ORK_WEB_SCREENSHOTS`` when set (``docs/web/`` is made that way).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="ork serve needs ork-core[web]")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the test extra)")
import httpx  # noqa: E402

from webhelpers import TOKEN, SchedulerProcess, Server, WebProject, make_project, storage_of  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
BIG = 2000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium); CI=true makes this a failure")
    with playwright_api.sync_playwright() as pw:
        # launch() gives the browser a fresh profile of its own (Playwright refuses --user-data-dir there)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    return in_thread(make_project, tmp_path_factory.mktemp("webui") / "proj")


def in_thread(fn: Any, *args: Any) -> Any:
    """Call `fn` in another thread: Playwright's sync API holds this thread's event loop, and ork's run loop wants its own."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@pytest.fixture(scope="module")
def server(proj: WebProject) -> Iterator[Server]:
    with Server(proj.dir) as srv:
        yield srv


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(15000)
    yield page
    context.close()
    assert errors == [], errors  # no script error on any page


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("ORK_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def save_token(page: Any) -> None:
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    playwright_api.expect(page.locator("#token-state")).to_have_text("set")


def test_runs_page_shows_a_finished_a_failed_and_a_running_run(page: Any, proj: WebProject) -> None:
    page.goto("/")
    rows = page.locator("#runs tbody tr")
    for run_id, status in ((proj.finished, "success"), (proj.failed, "failed"), (proj.running, "running")):
        row = page.locator(f'#runs tr[data-run="{run_id}"]')
        playwright_api.expect(row.locator(".badge")).to_have_text(status)
        assert status in (row.locator(".badge").get_attribute("class") or "")
    assert rows.count() >= 3
    colours = {page.locator(f'#runs tr[data-run="{r}"] .badge').evaluate("e => getComputedStyle(e).backgroundColor")
               for r in (proj.finished, proj.failed, proj.running)}
    assert len(colours) == 3  # each status its own colour
    scheduled = page.locator(f'#runs tr[data-run="{proj.scheduled}"]')
    playwright_api.expect(scheduled).to_contain_text("schedule")
    playwright_api.expect(scheduled).to_contain_text("T02:00:00+00:00")
    shot(page, "runs")
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button")
    playwright_api.expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert page.locator("#runs tbody tr").get_attribute("data-run") == proj.failed


def test_failed_run_dag_log_and_retry_until_success_without_reloading(page: Any, proj: WebProject) -> None:
    page.goto(f"/runs/{proj.failed}")
    node = page.locator('#dag g.node[data-task="transform"]')
    assert node.get_attribute("class") == "node st-failed"
    assert page.locator('#dag g.node[data-task="load"]').get_attribute("class") == "node st-upstream_failed"
    assert page.locator('#dag g.node[data-task="extract"]').get_attribute("class") == "node st-success"
    assert page.locator("#dag .edges path").count() == 3
    node.click()
    playwright_api.expect(page.locator("#log-lines")).to_contain_text("trying attempt 1")
    playwright_api.expect(page.locator("#log-lines")).to_contain_text("not fixed <b>yet</b>")  # text, not markup
    playwright_api.expect(page.locator("#log-tabs .tab")).to_have_count(1)
    shot(page, "run-failed")
    page.evaluate("window.__reloaded = false")  # gone if the page reloads
    page.click("#retry")  # no token yet: refused, and said so
    playwright_api.expect(page.locator("#flash")).to_contain_text("token")
    save_token(page)
    (proj.dir / "flows" / "fixed").write_text("")
    try:
        with SchedulerProcess(proj.dir, proj.db):
            page.click("#retry")
            playwright_api.expect(page.locator("#run-status")).to_have_text("success", timeout=60000)
    finally:
        (proj.dir / "flows" / "fixed").unlink()
    assert page.evaluate("window.__reloaded") is False
    playwright_api.expect(node).to_have_attribute("class", "node st-success")
    playwright_api.expect(page.locator('#dag g.node[data-task="load"]')).to_have_attribute("class", "node st-success")
    page.locator('#tasks a.show-log[data-task="transform"]').click()
    playwright_api.expect(page.locator("#log-tabs .tab")).to_have_count(2)
    playwright_api.expect(page.locator("#log-lines")).to_contain_text("trying attempt 2")
    page.locator("#log-tabs .tab").first.click()
    playwright_api.expect(page.locator("#log-lines")).to_contain_text("trying attempt 1")
    assert page.locator("#retry").count() == 0
    shot(page, "run-retried")


def test_task_output_and_log_are_text_not_markup(page: Any, proj: WebProject) -> None:
    page.goto(f"/runs/{proj.finished}")
    playwright_api.expect(page.locator('#tasks tr[data-task="shout"] .detail')).to_contain_text("<img src=x onerror")
    page.locator('#tasks a.show-log[data-task="shout"]').click()
    playwright_api.expect(page.locator("#log-lines")).to_contain_text("<script>window.__xss = 1</script>")
    assert page.evaluate("window.__xss") is None
    playwright_api.expect(page.locator("#metrics")).to_contain_text("rows")
    assert page.locator("#log-lines script, #tasks img").count() == 0


def test_trigger_a_run_with_a_param_from_the_ui(page: Any, proj: WebProject) -> None:
    page.goto("/")
    save_token(page)
    page.click("#trigger summary")
    page.fill("#trigger-workflow", "hello")
    page.fill("#trigger-params", "who=browser\ntimes=3")
    shot(page, "trigger")
    with SchedulerProcess(proj.dir, proj.db):
        page.click("#trigger-submit")
        page.wait_for_url("**/runs/*")
        playwright_api.expect(page.locator("#run-status")).to_have_text("success", timeout=60000)
    run_id = page.url.rsplit("/", 1)[1]
    playwright_api.expect(page.locator('#tasks tr[data-task="greet"] .detail')).to_contain_text('"who": "browser"')
    with storage_of(proj.db) as storage:
        run = storage.get_run(run_id)
    assert run.params == {"who": "browser", "times": 3} and run.origin.trigger == "manual"


def test_trigger_with_a_bad_param_shows_the_error(page: Any) -> None:
    page.goto("/")
    save_token(page)
    page.click("#trigger summary")
    page.fill("#trigger-workflow", "hello")
    page.fill("#trigger-params", "times=lots")
    page.click("#trigger-submit")
    playwright_api.expect(page.locator("#flash")).to_contain_text("expected an integer")
    assert page.url.endswith("/")


def test_cancel_a_queued_run_from_its_page(page: Any, server: Server) -> None:
    """No scheduler runs here: the queued run is nobody's, so the cancel takes effect at once."""
    created = httpx.post(f"{server.url}/api/v1/runs", json={"workflow": "hello"}, headers={"Authorization": f"Bearer {TOKEN}"})
    run_id = created.json()["id"]
    page.goto(f"/runs/{run_id}")
    playwright_api.expect(page.locator("#run-status")).to_have_text("queued")
    save_token(page)
    page.click("#cancel")
    playwright_api.expect(page.locator("#run-status")).to_have_text("cancelled")
    playwright_api.expect(page.locator('#dag g.node[data-task="greet"]')).to_have_attribute("class", "node st-cancelled")
    assert page.locator("#cancel").count() == 0


def test_pause_a_schedule(page: Any, server: Server, proj: WebProject) -> None:
    page.goto("/schedules")
    save_token(page)
    row = page.locator('#schedules tr[data-workflow="nightly"]')
    playwright_api.expect(row.locator(".pause-label")).to_have_text("active")
    playwright_api.expect(row).to_contain_text(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proj.tick)))  # last tick
    row.locator("input.pause").check()
    playwright_api.expect(row.locator(".pause-label")).to_have_text("paused")
    assert httpx.get(f"{server.url}/api/v1/schedules").json()["schedules"][0]["paused"] is True
    shot(page, "schedules")
    page.reload()
    assert page.locator('#schedules tr[data-workflow="nightly"] input.pause').is_checked()


def test_a_tokenless_post_is_refused_with_401(page: Any, proj: WebProject) -> None:
    page.goto("/schedules")
    status = page.evaluate(
        """async () => (await fetch('/api/v1/schedules/nightly/pause', {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: JSON.stringify({paused: false})})).status"""
    )
    assert status == 401
    form_post = page.evaluate(  # what a cross-site form could send: no custom header, no token
        """async () => (await fetch('/api/v1/runs/%s/cancel', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'x=1'})).status""" % proj.running
    )
    assert form_post == 401


def test_executors_page(page: Any) -> None:
    page.goto("/executors")
    playwright_api.expect(page.locator("#executors")).to_contain_text("python")
    broken = page.locator("#executors tr.broken")
    playwright_api.expect(broken).to_contain_text("warehouse")
    playwright_api.expect(broken).to_contain_text("unknown executor type 'bigquerry'")
    playwright_api.expect(page.locator("#jobs")).to_contain_text("no deferred jobs")
    shot(page, "executors")


def big_run(folder: Path) -> str:
    """A finished run of a 2,000-task workflow (1 → 1,998 → 1), really executed."""
    from orkhelpers import run_in_process, write

    lines = ["name: big", "tasks:", "  start: {file: tasks.py, function: hello}"]
    lines += [f"  t{i:04d}: {{file: tasks.py, function: hello, depends_on: [start]}}" for i in range(BIG - 2)]
    lines += [f"  end: {{file: tasks.py, function: hello, depends_on: [{', '.join(f't{i:04d}' for i in range(BIG - 2))}]}}"]
    write(folder / "flows" / "big.yaml", "\n".join(lines) + "\n")
    _, run = in_thread(run_in_process, folder, folder / "flows" / "big.yaml")
    assert run.status == "success" and len(run.tasks) == BIG
    return str(run.id)


def test_a_2000_task_run_page_renders(page: Any, proj: WebProject, capsys: pytest.CaptureFixture[str]) -> None:
    """Timing is measured by bench/web.py; here the page must render the whole graph."""
    run_id = big_run(proj.dir)
    start = time.monotonic()
    page.goto(f"/runs/{run_id}")
    playwright_api.expect(page.locator("#dag g.node")).to_have_count(BIG)
    elapsed = time.monotonic() - start
    assert page.locator("#dag g.node.st-success").count() == BIG
    assert page.locator("#tasks tbody tr").count() == BIG
    with capsys.disabled():
        print(f"\n2,000-task run page rendered in {elapsed:.2f}s")


def test_reads_behind_the_token_on_a_non_loopback_server(browser: Any, proj: WebProject) -> None:
    """As `ork serve --host 0.0.0.0` serves: pages ask for the token, then read with it."""
    with Server(proj.dir, public_reads=False) as private:
        context = browser.new_context(base_url=private.url)
        try:
            page = context.new_page()
            page.goto("/")
            playwright_api.expect(page.locator("h1")).to_contain_text("needs its API token")
            save_token(page)
            page.goto("/")
            playwright_api.expect(page.locator(f'#runs tr[data-run="{proj.failed}"]')).to_have_count(1)
            page.goto(f"/runs/{proj.finished}")
            page.locator('#tasks a.show-log[data-task="extract"]').click()  # the log API call sends the header
            playwright_api.expect(page.locator("#log-lines")).to_contain_text("hello world")
        finally:
            context.close()
