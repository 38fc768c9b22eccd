"""Drive a real JupyterLab in headless Chromium for end-to-end tests.

The harness starts ``jupyter lab`` from the project's virtual environment on a free
port with a random token, in a throw-away root directory and with throw-away user
settings (no news, no update checks, no kernel dialog, every cell in the DOM), then
opens it in Chromium through Playwright's sync API.

``LabServer`` owns the server process (its own process group, so teardown also ends
the kernels it started). ``LabPage`` wraps one Playwright page showing one notebook and
offers the few actions the tests need: run cells, wait for output, run code in the
notebook's own kernel, type and run a fresh cell, and save screenshots to
``test-artifacts/``.

Missing Chromium or Playwright skips the browser tests, except when the environment
variable ``CI`` is set: CI must run them, so there it is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
CHROMIUM_PATH = os.environ.get("TSW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

# Multiplies the test's waiting limits (never its speed requirements), for slow or busy
# machines: TSW_E2E_TIMEOUT_SCALE=3 waits three times as long for training to show progress.
TIMEOUT_SCALE = float(os.environ.get("TSW_E2E_TIMEOUT_SCALE", "1"))

# User settings written into the server's private settings directory. Each removes
# something that would otherwise pop up or reach the network during a test.
LAB_USER_SETTINGS = {
    # No news feed, no "would you like news?" toast, no update check.
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # Start the notebook's kernel without the kernel-selection dialog, and attach
    # every cell to the DOM so that off-screen cells can be found and measured.
    "@jupyterlab/notebook-extension/tracker": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}


def browser_stack_problem() -> str | None:
    """Say why the browser tests cannot run here, or return None when they can."""
    if not Path(CHROMIUM_PATH).exists():
        return (
            f"Chromium not found at {CHROMIUM_PATH}: install it with "
            "'apt-get install chromium' (or 'make browser'), or point TSW_CHROMIUM at it"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        try:
            import jupyterlab  # noqa: F401
        except ImportError:
            return "jupyterlab is missing: pip install -e '.[test]'"
    return None


def require_browser_stack() -> None:
    """Skip the calling test when the browser stack is missing; fail instead under CI."""
    problem = browser_stack_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {problem}")
    pytest.skip(problem)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """A ``jupyter lab`` process serving ``root_dir``, isolated from the user's setup.

    Parameters
    ----------
    root_dir : Path
        Directory the server shows (and where kernels start).
    work_dir : Path
        Private directory for settings, runtime files and the server log.
    env : dict, optional
        Extra environment variables for the server and therefore its kernels.
    startup_timeout : float
        Seconds to wait for the server to answer before giving up.
    """

    def __init__(self, root_dir, work_dir, env=None, startup_timeout=90.0):
        self.root_dir = Path(root_dir)
        self.work_dir = Path(work_dir)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(16)
        self.port = None
        self.process = None
        self.log_path = self.work_dir / self.log_name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        """Full URL of ``path`` with the token, so the first visit logs in."""
        separator = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{separator}token={self.token}"

    def _environment(self) -> dict:
        env = dict(os.environ)
        private = {
            "JUPYTER_CONFIG_DIR": self.work_dir / "config",
            "JUPYTER_RUNTIME_DIR": self.work_dir / "runtime",
            "JUPYTERLAB_SETTINGS_DIR": self.work_dir / "settings",
            "JUPYTERLAB_WORKSPACES_DIR": self.work_dir / "workspaces",
            "IPYTHONDIR": self.work_dir / "ipython",
        }
        for name, path in private.items():
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        # The kernels must import the package from this source tree.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def _write_user_settings(self) -> None:
        settings_dir = self.work_dir / "settings"
        for plugin, values in LAB_USER_SETTINGS.items():
            package, name = plugin.rsplit("/", 1)
            target = settings_dir / package / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))

    def start(self) -> "LabServer":
        """Start the server and return once its REST API answers."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = self._environment()
        self._write_user_settings()
        self.port = _free_port()
        command = self.command()
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command,
            cwd=self.root_dir,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: teardown reaches the kernels
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"{self.name} did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    #: What the error messages call this server, and its log file in ``work_dir``.
    name = "jupyter lab"
    log_name = "jupyter-lab.log"

    def _server_options(self) -> list[str]:
        """Options every jupyter_server application (Lab, Notebook 7) takes."""
        options = [
            "--no-browser",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            options.append("--allow-root")  # containers and CI runners often run as root
        return options

    def command(self) -> list[str]:
        """The server's command line (subclasses start other frontends)."""
        return [
            sys.executable,
            "-m",
            "jupyterlab",
            *self._server_options(),
            # The default 'pypi' manager queries PyPI; tests stay offline.
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            # Exposes window.jupyterapp, which the helpers use to run commands.
            "--LabApp.expose_app_in_browser=True",
        ]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self) -> None:
        """End the server and everything in its process group (kernels included)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Kernels may outlive a server that ignored SIGTERM; the group id is the server's pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._log_file.close()
        self.process = None

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def frontend_problem(module: str) -> str | None:
    """Say why a frontend (``"notebook"`` for Notebook 7, ``"voila"``) cannot run here."""
    problem = browser_stack_problem()
    if problem is not None:
        return problem
    if importlib.util.find_spec(module) is None:
        return f"the {module} package is missing: pip install -e '.[test]'"
    return None


def require_frontend(module: str) -> None:
    """Skip the calling test when ``module``'s frontend cannot run; fail instead under CI."""
    problem = frontend_problem(module)
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {problem}")
    pytest.skip(problem)


class NotebookServer(LabServer):
    """A Jupyter Notebook 7 server (``python -m notebook``), set up as :class:`LabServer`.

    Notebook 7 is built from JupyterLab's parts: the same user settings apply, and with
    ``expose_app_in_browser`` the page has ``window.jupyterapp``, so :class:`NotebookPage`
    reuses :class:`LabPage`'s cell and kernel helpers.
    """

    name = "jupyter notebook"
    log_name = "jupyter-notebook.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "notebook",
            *self._server_options(),
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ]


class VoilaServer(LabServer):
    """A standalone Voilà server (``voila <root_dir>``), as a teacher would start one.

    It serves the folder's notebooks at ``voila/render/<name>``: every page load runs the
    notebook in a fresh kernel and shows only its outputs. Pages cannot reach the kernel.
    """

    name = "voila"
    log_name = "voila.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "voila",
            str(self.root_dir),
            "--no-browser",
            f"--Voila.token={self.token}",
            f"--Voila.port={self.port}",
            "--Voila.port_retries=0",
            "--Voila.ip=127.0.0.1",
            "--show_tracebacks=True",
        ]

    def render_url(self, name: str) -> str:
        """URL of the rendered notebook ``name`` (relative to the root)."""
        return self.url(f"voila/render/{name}")

    def _answers(self) -> bool:
        # The tree page lists the folder without starting a kernel.
        try:
            with urllib.request.urlopen(self.url(""), timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False


@contextlib.contextmanager
def chromium(headless: bool = True):
    """Yield a Playwright Chromium browser using the system's Chromium binary."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=headless, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# JavaScript run in the page. `window.jupyterapp` exists because of
# --LabApp.expose_app_in_browser; the notebook is the current main-area widget.
_JS_NOTEBOOK = "window.jupyterapp.shell.currentWidget"

_JS_KERNEL_EXECUTE = """
async ({code, timeoutMs}) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false,
                                        stop_on_error: true});
  const out = [];
  let error = null;
  future.onIOPub = (msg) => {
    const kind = msg.header.msg_type;
    if (kind === 'stream') out.push(msg.content.text);
    else if (kind === 'execute_result') out.push(msg.content.data['text/plain']);
    else if (kind === 'error') error = msg.content.ename + ': ' + msg.content.evalue + '\\n'
                                      + msg.content.traceback.join('\\n');
  };
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), timeoutMs));
  const reply = await Promise.race([future.done, timeout]);
  if (reply === 'timeout') return {status: 'timeout', out: out.join(''), error};
  return {status: reply.content.status, out: out.join(''), error};
}
"""

_JS_CELL_STATE = """
(index) => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const cell = notebook.widgets[index];
  if (!cell) return null;
  const model = cell.model;
  const outputs = [];
  if (model.type === 'code') {
    for (let i = 0; i < model.outputs.length; i++) {
      const item = model.outputs.get(i).toJSON();
      if (item.text) outputs.push(Array.isArray(item.text) ? item.text.join('') : item.text);
      if (item.data && item.data['text/plain']) {
        const text = item.data['text/plain'];
        outputs.push(Array.isArray(text) ? text.join('') : text);
      }
      if (item.ename) outputs.push(item.ename + ': ' + item.evalue);
    }
  }
  return {
    type: model.type,
    source: model.sharedModel.getSource(),
    executionCount: model.type === 'code' ? model.executionCount : null,
    running: cell.node.classList.contains('jp-mod-running')
             || (model.type === 'code' && model.executionState === 'running'),
    hasError: model.type === 'code'
              && Array.from({length: model.outputs.length},
                            (_, i) => model.outputs.get(i).type).includes('error'),
    text: outputs.join('\\n'),
  };
}
"""


class BrowserPage:
    """One Chromium page on one of the servers: console capture, screenshots, diagnostics.

    Parameters
    ----------
    page : playwright.sync_api.Page
    server : LabServer
        Or one of its subclasses (:class:`NotebookServer`, :class:`VoilaServer`).
    artifacts_dir : Path
        Where ``screenshot`` writes PNG files.
    """

    def __init__(self, page, server: LabServer, artifacts_dir: Path = ARTIFACTS_DIR):
        self.page = page
        self.server = server
        self.artifacts_dir = Path(artifacts_dir)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))

    def screenshot(self, name: str, locator=None) -> Path:
        """Save a PNG of the page (or of ``locator``) as ``test-artifacts/<name>.png``."""
        path = self.artifacts_dir / f"{name}.png"
        if locator is None:
            self.page.screenshot(path=str(path), full_page=False)
        else:
            locator.screenshot(path=str(path))
        return path

    def diagnostics(self) -> str:
        """Recent browser console lines and the server log, for failure messages."""
        console = "\n".join(self.console[-30:])
        return f"--- browser console ---\n{console}\n--- server log ---\n{self.server.log_tail(3000)}"


class LabPage(BrowserPage):
    """One Chromium page showing a notebook in JupyterLab.

    Parameters
    ----------
    page : playwright.sync_api.Page
    server : LabServer
    artifacts_dir : Path
        Where ``screenshot`` writes PNG files.
    """

    # -- opening -------------------------------------------------------------------
    def open_notebook(self, name: str, timeout: float = 90.0) -> None:
        """Open ``name`` (relative to the server root) and wait for an idle kernel."""
        self.page.goto(self.server.url(f"lab/tree/{name}?reset"), timeout=timeout * 1000)
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.content"
            " && window.jupyterapp.shell.currentWidget.content.widgets.length > 0",
            timeout=timeout * 1000,
        )
        self.wait_kernel_idle(timeout)
        self.dismiss_popups()
        # The file browser takes width the notebook's widgets need.
        self.page.evaluate("() => { window.jupyterapp.shell.collapseLeft();"
                           " window.jupyterapp.shell.collapseRight(); }")

    def dismiss_popups(self) -> None:
        """Accept a kernel-selection dialog and close notification toasts, if shown."""
        dialog = self.page.locator(".jp-Dialog")
        if dialog.count():
            accept = dialog.locator(".jp-mod-accept")
            if accept.count():
                accept.first.click()
            else:
                self.page.keyboard.press("Escape")
        for button in self.page.locator(".jp-toast-button, .Toastify__close-button").all():
            with contextlib.suppress(Exception):
                button.click(timeout=1000)

    def wait_kernel_idle(self, timeout: float = 60.0) -> None:
        """Wait until the notebook's kernel exists and reports idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.page.locator(".jp-Dialog").count():
                self.dismiss_popups()
            status = self.page.evaluate(
                f"""() => {{
                  const ctx = {_JS_NOTEBOOK}.sessionContext;
                  const kernel = ctx.session && ctx.session.kernel;
                  return kernel ? kernel.status : null;
                }}"""
            )
            if status == "idle":
                return
            time.sleep(0.25)
        raise TimeoutError(f"kernel not idle after {timeout:.0f} s\n{self.diagnostics()}")

    # -- cells -----------------------------------------------------------------------
    def cell_sources(self) -> list[str]:
        return self.page.evaluate(
            f"() => {_JS_NOTEBOOK}.content.widgets.map((c) => c.model.sharedModel.getSource())"
        )

    def find_cell(self, fragment: str) -> int:
        """Index of the first cell whose source contains ``fragment``."""
        for index, source in enumerate(self.cell_sources()):
            if fragment in source:
                return index
        raise LookupError(f"no cell contains {fragment!r}")

    def cell_state(self, index: int) -> dict:
        state = self.page.evaluate(_JS_CELL_STATE, index)
        if state is None:
            raise IndexError(f"the notebook has no cell {index}")
        return state

    def cell(self, index: int):
        """Locator of the cell's DOM node."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run_cells(self, indices, timeout: float = 120.0) -> None:
        """Run the given cells in order, each after the previous one has finished.

        Raises ``AssertionError`` naming the cell when one ends in an error.
        """
        for index in indices:
            state = self.cell_state(index)
            if state["type"] != "code":
                continue
            before = state["executionCount"]
            self.page.evaluate(
                f"""(index) => {{
                  const notebook = {_JS_NOTEBOOK}.content;
                  notebook.activeCellIndex = index;
                  notebook.deselectAll();
                  window.jupyterapp.commands.execute('notebook:run-cell');
                }}""",
                index,
            )
            self.wait_cell_done(index, before, timeout)

    def run_all_above(self, index: int, timeout: float = 180.0) -> None:
        """Run every cell above ``index``, one after the other."""
        self.run_cells(range(index), timeout=timeout)

    def run_all(self, timeout: float = 300.0) -> None:
        """Click Run → Run All Cells in the menu bar and wait for every code cell."""
        n_cells = len(self.cell_sources())
        before = {i: self.cell_state(i) for i in range(n_cells)}
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel",
                          has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + timeout
        for index, state in before.items():
            if state["type"] == "code":
                self.wait_cell_done(index, state["executionCount"],
                                    max(deadline - time.monotonic(), 1.0))

    def wait_cell_done(self, index: int, previous_count=None, timeout: float = 120.0) -> dict:
        """Wait until cell ``index`` has a new execution count and is no longer running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.cell_state(index)
            fresh = state["executionCount"] is not None and state["executionCount"] != previous_count
            if fresh and not state["running"]:
                if state["hasError"]:
                    raise AssertionError(
                        f"cell {index} failed:\n{state['source']}\n---\n{state['text']}"
                    )
                return state
            time.sleep(0.2)
        raise TimeoutError(
            f"cell {index} still running after {timeout:.0f} s:\n{self.cell_state(index)}\n"
            f"{self.diagnostics()}"
        )

    def wait_for_output(self, index: int, text: str, timeout: float = 60.0) -> str:
        """Wait until the output of cell ``index`` contains ``text``; return all its text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.cell_state(index)
            if text in state["text"]:
                return state["text"]
            time.sleep(0.2)
        raise TimeoutError(
            f"cell {index} output lacks {text!r} after {timeout:.0f} s:\n"
            f"{self.cell_state(index)['text'][-2000:]}"
        )

    def type_and_run_new_cell(self, code: str, expected: str, timeout: float = 30.0):
        """Add a cell at the end through the keyboard, run it, wait for ``expected``.

        Returns
        -------
        seconds : float
            From pressing Shift+Enter until ``expected`` shows in the cell's output.
        text : str
            The cell's output text.
        """
        n_cells = len(self.cell_sources())
        last = self.cell(n_cells - 1)
        last.scroll_into_view_if_needed()
        # Clicking the prompt selects the cell and gives the notebook keyboard focus.
        last.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")  # command mode
        self.page.keyboard.press("b")  # command mode: insert a cell below
        self.page.wait_for_function(
            f"() => {_JS_NOTEBOOK}.content.widgets.length === {n_cells + 1}", timeout=10_000
        )
        self.page.keyboard.press("Enter")  # edit mode
        editor = self.cell(n_cells).locator(".cm-content")
        editor.wait_for(state="visible", timeout=10_000)
        editor.click()
        self.page.keyboard.insert_text(code)
        start = time.monotonic()
        self.page.keyboard.press("Shift+Enter")
        self.page.wait_for_function(
            f"""() => {{
              const cell = {_JS_NOTEBOOK}.content.widgets[{n_cells}];
              return cell.outputArea && cell.outputArea.node.innerText.includes({json.dumps(expected)});
            }}""",
            timeout=timeout * 1000,
            polling=20,
        )
        seconds = time.monotonic() - start
        return seconds, self.cell_state(n_cells)["text"]

    # -- kernel ------------------------------------------------------------------------
    def kernel_execute(self, code: str, timeout: float = 60.0) -> str:
        """Run ``code`` in the notebook's kernel (not as a cell) and return its stdout.

        Raises ``AssertionError`` with the traceback when the code raises.
        """
        result = self.page.evaluate(
            _JS_KERNEL_EXECUTE, {"code": code, "timeoutMs": int(timeout * 1000)}
        )
        if result["status"] == "timeout":
            raise TimeoutError(f"kernel code still running after {timeout:.0f} s:\n{code}")
        if result["status"] != "ok":
            traceback = re.sub(r"\x1b\[[0-9;]*m", "", result["error"] or "")  # no ANSI colours
            raise AssertionError(f"kernel code failed:\n{code}\n---\n{traceback}")
        return result["out"]

    def kernel_json(self, expression: str, timeout: float = 60.0):
        """Evaluate a Python expression in the kernel and return it decoded from JSON."""
        marker = "@@tsw-json@@"
        code = f"import json as _json\nprint({marker!r} + _json.dumps({expression}))"
        out = self.kernel_execute(code, timeout)
        for line in out.splitlines():
            if line.startswith(marker):
                return json.loads(line[len(marker):])
        raise AssertionError(f"no JSON result in kernel output:\n{out}")


class NotebookPage(LabPage):
    """One Chromium page showing a notebook in Jupyter Notebook 7 (see :class:`LabPage`)."""

    def open_notebook(self, name: str, timeout: float = 90.0) -> None:
        """Open ``name`` (relative to the server root) and wait for an idle kernel."""
        self.page.goto(self.server.url(f"notebooks/{name}"), timeout=timeout * 1000)
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.content"
            " && window.jupyterapp.shell.currentWidget.content.widgets"
            " && window.jupyterapp.shell.currentWidget.content.widgets.length > 0",
            timeout=timeout * 1000,
        )
        self.wait_kernel_idle(timeout)
        self.dismiss_popups()


class VoilaPage(BrowserPage):
    """One Chromium page showing a notebook rendered by Voilà (outputs only, no kernel access)."""

    def open_notebook(self, name: str, timeout: float = 180.0) -> None:
        """Load ``name`` and wait until Voilà has run every cell (or raise with its error)."""
        self.page.goto(self.server.render_url(name), timeout=timeout * 1000)
        # Voilà renders progressively and marks the end by hiding its spinner; a failing
        # cell shows a traceback in the page.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.page.evaluate(
                """() => ({
                  error: Array.from(document.querySelectorAll('.jp-OutputArea-output'))
                         .map((el) => el.innerText).filter((t) => /Traceback/.test(t)).join('\\n'),
                  done: document.readyState === 'complete' && !document.querySelector('#loading'),
                })"""
            )
            if state["error"]:
                raise AssertionError(f"Voilà shows an error:\n{state['error'][-3000:]}")
            if state["done"]:
                return
            time.sleep(0.5)
        raise TimeoutError(f"Voilà still rendering after {timeout:.0f} s\n{self.diagnostics()}")


# -- pytest fixtures (import them into a test module to use them) ---------------------------
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A scratch copy of ``notebooks/``: what the server shows and where kernels write."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(NOTEBOOK_DIR, root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


@pytest.fixture(scope="module")
def lab_server(lab_root, tmp_path_factory):
    """A running JupyterLab on ``lab_root`` whose kernels train in quick mode."""
    require_browser_stack()
    server = LabServer(lab_root, tmp_path_factory.mktemp("lab-work"),
                       env={"TSIMCNE_QUICK": "1"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lab_browser(lab_server):
    """Headless Chromium (started after the server, so a missing stack skips first)."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def lab(lab_server, lab_browser):
    """A fresh page (1400x1000 CSS pixels, scale 1) wrapped in :class:`LabPage`."""
    context = lab_browser.new_context(viewport={"width": 1400, "height": 1000},
                                      device_scale_factor=1)
    try:
        yield LabPage(context.new_page(), lab_server)
    finally:
        context.close()
