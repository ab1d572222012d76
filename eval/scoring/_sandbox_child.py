"""The sandboxed side of the code scorer: a script ``_code.py`` starts, never imports.

    python -I -B _sandbox_child.py < task.json

It reads the task (``setup``, ``code``, ``tests``, ``nonce``, ``limits``) from stdin, lowers its
own resource limits, installs an audit hook, runs setup, code and each test in one namespace, and
writes one line ``<nonce> <json result>`` to a copy of stdout taken before the code ran. Only the
standard library may be used here: ``-I`` drops the project from ``sys.path``.

The audit hook is installed before any answer code runs and cannot be removed by it. It refuses
(``PermissionError``) and records: sockets, process creation (``subprocess``, ``os.system``,
``os.exec*``, ``os.fork``, ``os.posix_spawn``, ``os.spawn*``, ``pty``), signals to other
processes, looking up C functions through ``ctypes``, and writing, deleting or renaming files
outside the sandbox's directory. This guards against the accidents of model-written code; it
is not a boundary against code written to escape (run the scorer in a container for that).
"""

from __future__ import annotations

import json
import os
import resource
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PROCESS = ("subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn",
            "os.spawn", "pty.", "os.kill", "os.killpg", "signal.pthread_kill")
# Events whose leading arguments are paths the call changes.
_PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.rename": 2, "os.mkdir": 1, "os.chmod": 1,
                "os.chown": 1, "os.symlink": 2, "os.link": 2, "os.truncate": 1, "os.utime": 1,
                "shutil.rmtree": 1, "os.chflags": 1, "os.lchflags": 1}


def _set_limits(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    memory = int(limits["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _inside(root: str, path: object) -> bool:
    if isinstance(path, int):
        return True  # an already open descriptor: opening it was checked
    try:
        real = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return real == root or real.startswith(root + os.sep) or real == os.devnull


def _hook_for(root: str, refused: list[str]):
    """The audit hook: refuse and record what the sandbox does not allow."""
    checking = False

    def refuse(kind: str, what: str) -> None:
        if len(refused) < 20:
            refused.append(f"{kind} refused ({what})")
        raise PermissionError(f"sandbox: {kind} refused ({what})")

    def hook(event: str, args: tuple) -> None:
        nonlocal checking
        if checking:  # realpath below raises no events today; never recurse if one day it does
            return
        if event.startswith("socket."):
            refuse("network", event)
        elif event.startswith(_PROCESS):
            refuse("process creation", event)
        elif event.startswith("ctypes.dlsym"):
            refuse("C function lookup", event)
        elif event == "import" and args[0] == "_posixsubprocess":
            refuse("process creation", "import _posixsubprocess")  # a fresh copy has fork_exec
        elif event == "open" or event in _PATH_EVENTS:
            if event == "open" and (args[2] or 0) & _WRITE_FLAGS == 0:
                return
            checking = True
            try:
                paths = args[:1] if event == "open" else args[:_PATH_EVENTS[event]]
                outside = [p for p in paths if not _inside(root, p)]
            finally:
                checking = False
            if outside:
                refuse("file write outside the sandbox", f"{event} {os.fsdecode(outside[0])}")

    return hook


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


def _run(task: dict, namespace: dict) -> dict:
    result: dict = {"error": None, "tests": []}
    try:
        exec(compile(task["setup"], "<setup>", "exec"), namespace)
        exec(compile(task["code"], "<answer>", "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are answers' doing too
        result["error"] = _describe(exc)
        return result
    for test in task["tests"]:
        try:
            exec(compile(test, "<test>", "exec"), namespace)
        except BaseException as exc:
            result["tests"].append(_describe(exc))
        else:
            result["tests"].append(None)
    return result


def main() -> None:
    task = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # input() sees end of file rather than the task
    report = os.dup(1)
    root = os.path.realpath(os.getcwd())
    _set_limits(task["limits"])
    # Loaded before the hook so `import subprocess` keeps working (and is refused when used);
    # its C helper is disarmed because calling it directly would fork without an audit event.
    import _posixsubprocess
    import subprocess  # noqa: F401

    def no_fork_exec(*args: object) -> None:
        refused.append("process creation refused (_posixsubprocess.fork_exec)")
        raise PermissionError("sandbox: process creation refused")

    refused: list[str] = []
    _posixsubprocess.fork_exec = no_fork_exec
    sys.dont_write_bytecode = True
    sys.addaudithook(_hook_for(root, refused))
    namespace = {"__name__": "__answer__", "__builtins__": __builtins__}
    result = _run(task, namespace)
    namespace.clear()  # frees what the answer held, so a MemoryError can still be reported
    result["refused"] = refused
    line = task["nonce"] + " " + json.dumps(result) + "\n"
    os.write(report, line.encode())
    os._exit(0)  # no atexit handlers or finalizers of the answer's code


if __name__ == "__main__":
    main()
