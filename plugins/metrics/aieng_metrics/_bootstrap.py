"""The child side of the functional-correctness sandbox: run as a script, never imported
for its effects.

``python -I -B _bootstrap.py`` reads one JSON job from standard input (the code, one test
case, the limits, a nonce and the file descriptor to report on), then, before any of the
job's code runs: sets the resource limits (address space, CPU time, file size, no core
dumps), and installs an audit hook (PEP 578) that refuses socket creation (but for Unix
socket pairs, which asyncio's event loop needs) and every socket operation, process
creation, signals to other processes, reading other processes' ``/proc`` files and any
write, removal or rename outside its working directory. It compiles the code and the test,
executes them in one namespace and writes one line, ``NONCE {"status": ...}``, to the
report descriptor: ``passed``, ``failed`` (an ``AssertionError``) or ``error`` (any other
exception, a syntax error included). A timeout is decided by the parent.

The audit hook is a guard against accidents, not a security boundary: code that means
harm can get around it (through ``ctypes``, for instance), and, running in this process,
can forge its verdict (the nonce and the descriptor are in its frames). What is bound
before the code runs (the compiled test, ``exec``, the report's encoder) keeps patched
modules from changing the verdict. The parent adds a network namespace (``unshare -n``)
where the system allows one.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

__all__ = ["main"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                             "os.spawn", "os.fork", "os.forkpty", "pty.spawn"})
_PATH_EVENTS = {  # event -> indices of its path arguments
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.symlink": (1,), "os.link": (1,), "os.chmod": (0,), "os.chown": (0,),
    "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "os.mkfifo": (0,),
    "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,), "sqlite3.connect": (0,),
}
#: Private modules whose functions start processes or send signals past the audit events
#: of their public forms: replaced by refusals, and not to be imported afresh.
_PRIVATE = {"_posixsubprocess": ("fork_exec", "starting processes is disabled"),
            "_signal": ("pidfd_send_signal", "signalling other processes is disabled")}


def _limit(resource: Any, kind: int, value: int) -> None:
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(kind, (value, hard if kind == resource.RLIMIT_CPU else value))


def _set_limits(job: dict[str, Any]) -> None:
    import resource

    _limit(resource, resource.RLIMIT_CORE, 0)
    if job.get("memory_bytes"):
        _limit(resource, resource.RLIMIT_AS, int(job["memory_bytes"]))
    if job.get("cpu_seconds"):
        _limit(resource, resource.RLIMIT_CPU, int(job["cpu_seconds"]))
    if job.get("file_bytes"):
        _limit(resource, resource.RLIMIT_FSIZE, int(job["file_bytes"]))


def _install_guard(job: dict[str, Any]) -> None:
    root = os.path.realpath(job["root"])
    allowed = (root + os.sep, )
    block_network = bool(job.get("block_network", True))
    block_processes = bool(job.get("block_processes", True))
    me = os.getpid()
    af_unix = getattr(__import__("_socket"), "AF_UNIX", None)
    realpath, join, getcwd, fspath = os.path.realpath, os.path.join, os.getcwd, os.fspath
    busy = [False]

    mine = (f"/proc/{me}", f"/proc/{me}/")

    def text_of(path: object) -> str:
        text = fspath(path)  # type: ignore[call-overload]
        return os.fsdecode(text) if isinstance(text, bytes) else text

    def inside(path: object) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor: its opening was checked
        text = text_of(path)
        if text in ("/dev/null", os.devnull, ":memory:", ""):
            return True  # ":memory:" and "": sqlite3's databases in memory
        if text.startswith("file:"):  # a sqlite3 URI: file:PATH?query
            text = text[5:].split("?")[0].split("#")[0]
            text = text[len("//localhost"):] if text.startswith("//localhost/") else text
            text = "/" + text.lstrip("/") if text.startswith("//") else text
        full = realpath(join(getcwd(), text))
        return full == root or full.startswith(allowed)

    def other_process(path: object) -> bool:
        # /proc/<pid>/... of another process: its environment (API keys), memory, files.
        if isinstance(path, int):
            return False
        full = realpath(join(getcwd(), text_of(path)))
        parts = full.split(os.sep)
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and \
            not (full in mine or full.startswith(mine[1]))

    def guard(event: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            if block_network and event.startswith("socket.") and event != "socket.gethostname" \
                    and not (event == "socket.__new__" and len(args) > 1
                             and args[1] == af_unix):
                # A Unix socket may be made (socket.socketpair: asyncio's loop needs one)
                # but not connected or bound anywhere.
                raise PermissionError(f"network access is disabled in the sandbox ({event})")
            if block_processes and event in _PROCESS_EVENTS:
                raise PermissionError(f"starting processes is disabled in the sandbox ({event})")
            if event in ("os.kill", "os.killpg") and args and args[0] not in (me, 0):
                raise PermissionError("signalling other processes is disabled in the sandbox")
            if event == "import" and args and args[0] in _PRIVATE:
                raise PermissionError(f"{_PRIVATE[args[0]][1]} in the sandbox (import "
                                      f"{args[0]})")
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                if path is not None and other_process(path):
                    raise PermissionError(f"reading other processes' files is disabled in "
                                          f"the sandbox: {path!r}")
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & _WRITE_FLAGS)
                if writing and path is not None and not inside(path):
                    raise PermissionError(f"writing outside the sandbox's directory is "
                                          f"disabled: {path!r}")
            elif event in _PATH_EVENTS:
                for index in _PATH_EVENTS[event]:
                    if index < len(args) and args[index] is not None and not inside(args[index]):
                        raise PermissionError(f"changing files outside the sandbox's "
                                              f"directory is disabled ({event} "
                                              f"{args[index]!r})")
        finally:
            busy[0] = False

    refused = {"_posixsubprocess": block_processes, "_signal": True}
    for name, (function, why) in _PRIVATE.items():
        module = __import__(name)  # imported now, so that a later import is a re-import
        if refused[name] and hasattr(module, function):
            setattr(module, function, _refusal(f"{why} in the sandbox ({name}.{function})"))
            if name == "_signal":
                setattr(__import__("signal"), function, getattr(module, function))
    sys.addaudithook(guard)


def _refusal(message: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(message)
    return refuse


_FILES = {"code": "<solution>", "test": "<test>"}


def _message(error: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(type(error), error)]
    text = "".join(lines).strip()
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if f.filename in ("<solution>", "<test>")]
    if frames and not isinstance(error, SyntaxError):
        where = frames[-1]
        text += f" (at {where.filename} line {where.lineno}: {(where.line or '').strip()})"
    return text[:2000]


def _run(job: dict[str, Any]) -> dict[str, str]:
    import linecache

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    for name in ("code", "test"):  # so tracebacks can quote the failing line
        source = job[name]
        linecache.cache[_FILES[name]] = (len(source), None, source.splitlines(True),
                                         _FILES[name])
    run = exec  # bound, with the compiled test, before the code could patch either
    try:
        code = compile(job.pop("code"), "<solution>", "exec")
        test = compile(job.pop("test"), "<test>", "exec")
        run(code, namespace)
        run(test, namespace)
    except AssertionError as error:
        return {"status": "failed", "message": _message(error)}
    except SystemExit as error:
        return {"status": "error", "message": f"the code called exit({error.code!r})"}
    except BaseException as error:  # noqa: BLE001 - every failure is a result
        return {"status": "error", "message": _message(error)}
    return {"status": "passed", "message": ""}


def _flush_output() -> None:
    # The code may have set sys.stdout to None, closed it or replaced it: the verdict
    # still goes out, and what was printed before that is not lost.
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()  # type: ignore[union-attr]
        except BaseException:  # noqa: BLE001, S110 - output is kept when it can be
            pass


def main() -> None:
    """Run one job read from standard input; report on the descriptor it names."""
    from json.encoder import encode_basestring_ascii  # not json.dumps: the code can patch it

    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    nonce = str(job.pop("nonce"))
    report = os.fdopen(int(job.pop("report_fd")), "w", encoding="utf-8", closefd=True)
    os.set_inheritable(report.fileno(), False)
    write, done, quote = report.write, report.flush, encode_basestring_ascii
    sys.dont_write_bytecode = True
    _set_limits(job)
    _install_guard(job)
    result = _run(job)
    _flush_output()
    write(f"{nonce} {{\"status\": {quote(result['status'])}, "
          f"\"message\": {quote(result['message'])}}}\n")
    done()
    os._exit(0)  # skip atexit handlers and finalizers the code may have registered


if __name__ == "__main__":
    main()
