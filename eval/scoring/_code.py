"""Code answers: extract the Python code, run it against test statements in a sandbox.

Score 1.0 only when every test passes (pass@1 of one sample); the detail counts the passes.
The run happens in a child process (``_sandbox_child.py``): ``python -I -B`` in a fresh
temporary directory deleted afterwards, with an empty environment, a wall-clock timeout, CPU and
address-space limits, a cap on what it may print, and an audit hook refusing network, process
creation and writes outside its directory. An answer that tries any of those scores 0.

:func:`acode` is the implementation (asyncio subprocess, safe inside an event loop, with an
optional semaphore bounding concurrent children); :func:`code` runs it for synchronous callers.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import signal
import sys
import tempfile
from pathlib import Path

import msgspec

from eval.scoring._score import Score

CHILD = Path(__file__).with_name("_sandbox_child.py")
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_TAG = re.compile(r"\[PYTHON\]\s*\n?(.*?)(?:\[/PYTHON\]|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def|class|import|from|async\s+def|@)\b", re.M)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
# Threads of numeric libraries need address space the memory limit does not leave them.
_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "LC_ALL": "C.UTF-8"}


class Limits(msgspec.Struct, frozen=True):
    """What one sandboxed run may use. ``cpu_s`` defaults to the wall-clock timeout rounded up."""

    timeout_s: float = 10.0
    cpu_s: int | None = None
    memory_mb: int = 512
    output_bytes: int = 1 << 20
    file_bytes: int = 16 << 20


def extract_code(answer: str) -> str:
    """The Python program in an answer.

    From fenced blocks (```` ```python ```` or untagged), the first that parses and defines a
    function or class: later blocks are usually example calls or an "alternative" version. Then
    Code Llama's ``[PYTHON]`` blocks; then the whole text if it parses; then the text from its
    first ``def``/``class``/``import`` line, with trailing prose cut off until it parses.
    """
    text = answer.replace("\r\n", "\n")
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    blocks = blocks or _TAG.findall(text)
    if blocks:
        parsed = [b for b in blocks if _parses(b)]
        defining = [b for b in parsed if _defines(b)]
        return (defining or parsed or blocks)[0]
    if _parses(text):
        return text
    start = _CODE_START.search(text)
    if not start:
        return text  # nothing code-like: let the run report the SyntaxError
    lines = text[start.start():].splitlines()
    for end in range(len(lines), max(0, len(lines) - 200), -1):
        candidate = "\n".join(lines[:end])
        if _parses(candidate):
            return candidate
    return "\n".join(lines)


async def acode(answer: str, tests: list[str], *, setup: str = "", limits: Limits | None = None,
                semaphore: asyncio.Semaphore | None = None) -> Score:
    """Run the answer's code, then each ``assert`` in ``tests``, in the sandbox.

    ``setup`` runs first in the same namespace (imports, helpers the tests use). At most
    ``semaphore``'s value of children run at once when one is given.
    """
    if not tests:
        raise ValueError("the code scorer needs at least one test statement")
    limits = limits or Limits()
    program = extract_code(answer)
    async with semaphore or contextlib.nullcontext():
        outcome = await _run(program, tests, setup, limits)
    return _score(outcome, len(tests), limits)


def code(answer: str, tests: list[str], *, setup: str = "",
         limits: Limits | None = None) -> Score:
    """:func:`acode` for synchronous callers (not from inside a running event loop)."""
    return asyncio.run(acode(answer, tests, setup=setup, limits=limits))


class _Outcome(msgspec.Struct):
    result: dict | None = None  # the child's report, when it got to write one
    killed: str | None = None  # why the parent killed it
    returncode: int | None = None
    output: bytes = b""


async def _run(program: str, tests: list[str], setup: str, limits: Limits) -> _Outcome:
    nonce = secrets.token_hex(16)
    task = {"setup": setup, "code": program, "tests": tests, "nonce": nonce,
            "limits": {"cpu_s": _cpu_seconds(limits), "memory_mb": limits.memory_mb,
                       "file_bytes": limits.file_bytes}}
    with tempfile.TemporaryDirectory(prefix="contextforge-code-") as tmp:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-B", str(CHILD), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp,
            env={**_ENV, "HOME": tmp, "TMPDIR": tmp}, start_new_session=True)
        outcome = _Outcome()
        try:
            outcome.output = await asyncio.wait_for(
                _exchange(proc, json.dumps(task).encode(), limits.output_bytes),
                limits.timeout_s)
            if len(outcome.output) > limits.output_bytes:
                outcome.killed = f"printed more than {limits.output_bytes} bytes"
        except TimeoutError:
            outcome.killed = f"timed out after {limits.timeout_s:g} s"
        finally:
            if outcome.killed or proc.returncode is None:
                _kill(proc)
            outcome.returncode = await _reap(proc)
    outcome.result = _report(outcome.output, nonce)
    return outcome


async def _exchange(proc: asyncio.subprocess.Process, task: bytes, cap: int) -> bytes:
    """Send the task, read the output until the child ends or prints more than ``cap``."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(task)
        await proc.stdin.drain()
        proc.stdin.close()
    chunks, size = [], 0
    while chunk := await proc.stdout.read(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    else:
        await _reap(proc)
    return b"".join(chunks)


async def _reap(proc: asyncio.subprocess.Process, timeout_s: float = 5.0) -> int | None:
    """The child's exit status, once the rest of its output is read.

    asyncio's ``wait()`` returns only when the child has exited *and* its pipes have closed
    (Python 3.11's ``base_subprocess``). Output left unread after the cap paused the stdout
    transport, which then never saw the pipe's end, so ``wait()`` never returned: the hang two
    full test runs met. Reading to the end (after the kill: at most a pipe's buffer) closes
    it. Past ``timeout_s`` (something else holds the pipe) the status is asked of the OS."""

    async def drained() -> int:
        if proc.stdout is not None:
            while await proc.stdout.read(1 << 16):
                pass
        return await proc.wait()

    try:
        return await asyncio.wait_for(drained(), timeout_s)
    except TimeoutError:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already, its status lost
            return proc.returncode
        return os.waitstatus_to_exitcode(status) if pid else proc.returncode


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: anything it started goes too


def _report(output: bytes, nonce: str) -> dict | None:
    marker = nonce.encode() + b" "
    at = output.rfind(marker)
    if at < 0:
        return None
    line = output[at + len(marker):].split(b"\n", 1)[0]
    try:
        return json.loads(line)
    except ValueError:
        return None


def _score(outcome: _Outcome, n_tests: int, limits: Limits) -> Score:
    if outcome.killed:
        return Score(0.0, f"{outcome.killed} (killed); 0/{n_tests} tests counted")
    result = outcome.result
    if result is None:
        return Score(0.0, f"{_exit_reason(outcome.returncode, limits)} before reporting; "
                          f"0/{n_tests} tests counted{_tail(outcome.output)}")
    refused = result.get("refused") or []
    failures = result["tests"]
    passed = sum(f is None for f in failures)
    counted = f"{passed}/{n_tests} tests passed"
    if refused:  # even when the answer caught the refusal and went on
        return Score(0.0, f"{refused[0]}; {counted}")
    if result["error"]:
        hint = (f" (memory limit {limits.memory_mb} MiB)"
                if result["error"].startswith("MemoryError") else "")
        return Score(0.0, f"code raised {result['error']}{hint}; 0/{n_tests} tests passed")
    if passed == n_tests:
        return Score(1.0, counted)
    first = next(i for i, f in enumerate(failures) if f is not None)
    return Score(0.0, f"{counted}; first failure: test {first + 1} ({failures[first]})")


def _exit_reason(returncode: int | None, limits: Limits) -> str:
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return f"killed by {signal.Signals(sig).name} (CPU limit {_cpu_seconds(limits)} s)"
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with code {returncode}"


def _cpu_seconds(limits: Limits) -> int:
    return limits.cpu_s if limits.cpu_s is not None else math.ceil(limits.timeout_s)


def _tail(output: bytes, limit: int = 160) -> str:
    text = output.decode(errors="replace").strip()
    return f"; output ends {text[-limit:]!r}" if text else ""


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _defines(source: str) -> bool:
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
               for node in ast.parse(source).body)
