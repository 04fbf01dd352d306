"""A console a person can read: Ray's own chatter goes to a log file, not the terminal.

Ray prints two kinds of lines on the driver's console:

- the driver's own Python log records (loggers ``ray`` and ``ray.data``, level INFO:
  "Started a local Ray instance.", "Starting execution of Dataset ...");
- every line that a worker process writes to stdout or stderr, forwarded by Ray
  (``ray.init(log_to_driver=True)``, the default): Ray Train's controller and workers
  at INFO, a detached actor's "Failed to query Ray Train Controller actor state" every
  few seconds when no dashboard (State API) runs, raw ``[mutex.cc : 452] RAW: ...`` lines
  of absl in Ray's C++ core, C++ core log lines.

``quiet`` keeps the first kind at INFO in the log file and lets only WARNING and above
through Ray's console handlers. For the second kind the levels are gone (Ray's handlers in
workers print the bare message), so every forwarded line goes to the log file and
``console_line`` decides which reach the terminal: lines that carry a level show when it
is WARNING or above; absl RAW lines and a short list of known noise never show; a bare
line shows when it reads like a warning or an error (or belongs to a traceback). Ray's
own printer then prints what is left, so its ``(name pid=...)`` prefix, its deduplication
(``RAY_DEDUP_LOGS``) and Ray's distributed tqdm bars work as before. Progress bars that
the driver draws (cdiflow's, Ray Data's) are not log records and are not touched.

Switching ``log_to_driver`` off would hide the noise too, but also every warning that a
worker prints; ``ray.LoggingConfig(log_level=...)`` reaches only the ``ray`` and root
loggers of workers (not ``ray.data`` and ``ray.train``, which have their own handlers),
and ``RAY_BACKEND_LOG_LEVEL`` not the absl RAW lines. Hence the filter.

``after_init`` swaps Ray's forwarding handler (``ray_print_logs`` on Ray's worker-stream
dispatcher, ray 2.60) for the filtered one; when that internal is missing it leaves Ray's
console as it is (noisy, nothing lost).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

#: Ray's handler of forwarded worker lines, and ours in its place.
RAY_HANDLER = "ray_print_logs"
OUR_HANDLER = "cdiflow_ray_console"
#: The driver-side loggers whose console handlers are held at WARNING.
DRIVER_LOGGERS = ("ray", "ray.data")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LEVELS = "DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL"
# Python logging ("2026-12-01 09:16:00,123\tINFO x.py:1 -- ..."), MLflow ("2026/12/01 ...")
_PY_LOG = re.compile(
    rf"^\d{{4}}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+(?P<level>{_LEVELS})\b"
)
# Ray's C++ core ("[2026-12-01 09:16:00,123 I 1234 5678] file.cc:12: ...") and glog/absl
# ("I1201 09:16:00.123456 1234 file.cc:12] ...")
_CPP_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ (?P<level>[DIWEF]) \d+ \d+\]")
_GLOG = re.compile(r"^(?P<level>[DIWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ")
# absl's raw logging ("[mutex.cc : 452] RAW: Lock blocking 0x... @") and its stack lines
_ABSL_RAW = re.compile(r"^\[[\w./-]+ ?: ?\d+\] RAW: ")
_STACK_FRAME = re.compile(r"^\s*@\s+0x[0-9a-fA-F]+")
_WARNING_WORDS = re.compile(
    r"warn|error|exception|traceback|fatal|critical|fail|abort|killed|died|\bdead\b"
    r"|out of memory|\boom\b|deprecat|timed? ?out|cannot|could not|couldn't|unable",
    re.IGNORECASE,
)
#: Warnings known to be noise, never shown (still in the log file).
KNOWN_NOISE = (
    # Ray Train V2's placement-group cleaner polls the State API every few seconds; a
    # local Ray without a dashboard has none. cdiflow shuts that Ray down after the run,
    # which frees the placement group anyway.
    "Failed to query Ray Train Controller actor state",
)

_lock = threading.Lock()
_state: _Quiet | None = None


class _LogFile(logging.FileHandler):
    """The log file: opened (and its folder made) on the first record, fixed format.

    ``ray.init`` sets its own formatter on every handler of the ``ray`` logger, so this
    handler formats records itself.
    """

    _driver = logging.Formatter(
        "%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- %(message)s"
    )
    _worker = logging.Formatter("%(asctime)s\t%(message)s")

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def format(self, record: logging.LogRecord) -> str:
        style = self._worker if getattr(record, "ray_worker_line", False) else self._driver
        return style.format(record)

    def worker_lines(self, data: dict) -> None:
        """Write forwarded worker lines, each with Ray's ``(name pid=..., ip=...)`` prefix."""
        name = data.get("actor_name") or data.get("task_name") or ""
        ip = data.get("ip")
        where = f"{name} pid={data.get('pid')}".strip()
        if ip and ip != data.get("localhost"):
            where += f", ip={ip}"
        stream = "stderr" if data.get("is_err") else "stdout"
        for line in data.get("lines", ()):
            record = logging.makeLogRecord(
                {"msg": f"({where}) [{stream}] {_ANSI.sub('', line)}", "ray_worker_line": True}
            )
            self.handle(record)


class _WarningsOnly(logging.Filter):
    """Held on Ray's console handlers while quiet: WARNING and above pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class _Quiet:
    def __init__(self, path: Path, say: Callable[[str], None] | None):
        self.path = path
        self.say = say
        self.file = _LogFile(path)
        self.filter = _WarningsOnly()
        self.touched: list[tuple[logging.Logger, list[logging.Handler]]] = []
        self.ray_handler: Callable | None = None  # Ray's printer, once swapped out

    def install(self) -> None:
        import ray.data  # noqa: F401  (configures the ray.data logger on import)

        for name in DRIVER_LOGGERS:
            logger = logging.getLogger(name)
            consoles = [h for h in logger.handlers if _is_console(h)]
            for handler in consoles:
                handler.addFilter(self.filter)
            logger.addHandler(self.file)
            self.touched.append((logger, consoles))

    def forward(self, data: dict) -> None:
        """Ray's dispatcher calls this with each batch of forwarded worker lines."""
        if data.get("pid") == "autoscaler":  # Ray prints only its events (monitor.log has all)
            self.ray_handler(data)
            return
        self.file.worker_lines(data)
        shown = console_lines(data.get("lines", ()))
        if shown:
            self.ray_handler({**data, "lines": shown})

    def uninstall(self) -> None:
        for logger, consoles in self.touched:
            for handler in consoles:
                handler.removeFilter(self.filter)
            logger.removeHandler(self.file)
        self.touched.clear()
        dispatcher = _dispatcher()
        if dispatcher is not None and self.ray_handler is not None:
            dispatcher.remove_handler(OUR_HANDLER)
            if _is_connected():
                dispatcher.add_handler(RAY_HANDLER, self.ray_handler)
        self.file.close()


def default_log_path(workspace: str | Path) -> Path:
    """``WORKSPACE/logs/ray-YYYYmmdd-HHMMSS-PID.log`` (the pid keeps parallel runs apart)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(workspace).expanduser().absolute() / "logs" / f"ray-{stamp}-{os.getpid()}.log"


def quiet(workspace: str | Path, say: Callable[[str], None] | None = None) -> Path:
    """Hold Ray's console output at warning level; the rest goes to a log file.

    Call before Ray starts (``cluster.connect`` calls ``after_init`` once it has). The
    file is created only when Ray writes to it. ``say`` is called once with a line
    naming the file when Ray starts. Calling it again starts a new file.
    """
    global _state
    with _lock:
        if _state is not None:
            _state.uninstall()
        _state = _Quiet(default_log_path(workspace), say)
        _state.install()
        path = _state.path
    if _is_connected():
        after_init()
    return path


def restore() -> None:
    """Undo ``quiet``: Ray's console as Ray sets it up."""
    global _state
    with _lock:
        if _state is not None:
            _state.uninstall()
            _state = None


def log_path() -> Path | None:
    """The log file of the active ``quiet``, or None."""
    return _state.path if _state is not None else None


def after_init() -> None:
    """Filter the forwarded worker lines of the Ray this process just connected to.

    Does nothing unless ``quiet`` is active. Idempotent.
    """
    with _lock:
        state = _state
        dispatcher = _dispatcher()
        if state is None or dispatcher is None:
            return
        with dispatcher._lock:
            handlers = dict(dispatcher.handlers)
        ray_handler = handlers.get(RAY_HANDLER)
        if ray_handler is None:  # log_to_driver=False, or already swapped
            return
        state.ray_handler = ray_handler
        dispatcher.remove_handler(OUR_HANDLER)
        dispatcher.add_handler(OUR_HANDLER, state.forward)
        dispatcher.remove_handler(RAY_HANDLER)
    if state.say is not None:
        state.say(f"Ray's own log lines: {state.path}")


def console_line(line: str) -> bool | None:
    """Whether a forwarded worker line shows on the console.

    True or False for a line whose kind is known (a level, absl RAW, known noise); None
    for a bare line, which ``console_lines`` shows only when it reads like a warning or an
    error.
    """
    text = _ANSI.sub("", line)
    for pattern in (_PY_LOG, _CPP_LOG, _GLOG):
        match = pattern.match(text)
        if match:
            level = match.group("level")
            return level not in ("DEBUG", "INFO", "D", "I")
    if _ABSL_RAW.match(text) or _STACK_FRAME.match(text):
        return False
    if any(noise in text for noise in KNOWN_NOISE):
        return False
    return None


def console_lines(lines) -> list[str]:
    """The forwarded lines (one worker's batch) that show on the console, in order.

    A bare line shows when it reads like a warning or an error; a traceback shows whole,
    up to the next line with a known kind.
    """
    from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC

    shown = []
    in_traceback = False
    for line in lines:
        if RAY_TQDM_MAGIC in line:  # a distributed tqdm bar's state
            shown.append(line)
            continue
        verdict = console_line(line)
        if verdict is None:
            if "Traceback (most recent call last)" in line:
                in_traceback = True
            verdict = in_traceback or bool(_WARNING_WORDS.search(line))
        else:
            in_traceback = False
        if verdict:
            shown.append(line)
    return shown


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def _dispatcher():
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher
    except ImportError:
        return None
    needed = ("handlers", "_lock", "add_handler", "remove_handler")
    if not all(hasattr(global_worker_stdstream_dispatcher, a) for a in needed):
        return None
    return global_worker_stdstream_dispatcher


def _is_connected() -> bool:
    import ray

    return ray.is_initialized()
