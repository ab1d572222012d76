import asyncio
import re
import time
from pathlib import Path

import pytest

from eval.scoring import Limits, acode, code, extract_code

FAST = Limits(timeout_s=2.0, memory_mb=256, output_bytes=1 << 16)
TESTS = ["assert add(1, 2) == 3", "assert add(2, 0) == 2"]
ADD = "def add(a, b):\n    return a + b\n"


def run(answer: str, tests: list[str] = TESTS, **kw) -> object:
    return code(answer, tests, limits=kw.pop("limits", FAST), **kw)


# --- extraction ---------------------------------------------------------------------------

def test_extracts_the_first_defining_fence_not_the_examples_or_the_alternative():
    # claude-v2 / WizardLM on MBPP: the function, a usage example, an "alternative" version
    answer = ("Here's a Python function to remove all whitespaces from a given string:\n\n"
              "```python\ndef remove_whitespaces(string):\n    return ''.join(string.split())\n```"
              "\n\nHere's an example usage:\n\n```python\nprint(remove_whitespaces('a b'))\n```\n"
              "\n\nYou can use the `strip()` method instead:\n\n```python\n"
              "def remove_whitespaces(string):\n    return string.strip()\n```")
    assert extract_code(answer) == ("def remove_whitespaces(string):\n"
                                    "    return ''.join(string.split())\n")


def test_extracts_code_llama_tags_and_skips_other_languages():
    llama = (" \n[PYTHON]\ndef remove_elements(list1, list2):\n    return [x for x in list1 if x "
             "not in list2]\n[/PYTHON]\n[TESTS]\n# Test case 1:\nassert remove_elements([1], [])")
    assert extract_code(llama).startswith("def remove_elements")
    assert "[TESTS]" not in extract_code(llama)
    js = "```javascript\nfunction f() {}\n```\n```\ndef f():\n    return 1\n```"
    assert extract_code(js) == "def f():\n    return 1\n"


def test_extracts_an_unclosed_fence_and_windows_line_ends():
    assert extract_code("```python\r\ndef f():\r\n    return 1") == "def f():\n    return 1"


def test_without_fences_the_whole_text_or_its_code_region():
    assert extract_code(ADD) == ADD
    prose = f"Sure! Here is the function:\n{ADD}This adds two numbers."
    assert extract_code(prose) == ADD.rstrip("\n")


# --- scoring ------------------------------------------------------------------------------

def test_a_correct_answer_scores_one():
    score = run(f"Here you go:\n```python\n{ADD}```")
    assert (score.value, score.detail) == (1.0, "2/2 tests passed")


def test_a_wrong_answer_scores_zero_with_the_pass_count():
    score = run("def add(a, b):\n    return a - b")
    assert score.value == 0.0
    assert score.detail == "1/2 tests passed; first failure: test 1 (AssertionError)"


def test_setup_runs_before_the_answer_in_the_same_namespace():
    answer = "def area(r):\n    return pi * r * r"  # relies on the setup's import
    assert code(answer, ["assert area(1) == pi"], setup="from math import pi",
                limits=FAST).value == 1.0


def test_code_that_does_not_run_reports_why():
    score = run("def add(a, b) return a + b")
    assert score.value == 0.0 and score.detail.startswith("code raised SyntaxError")
    assert run("raise SystemExit(0)").detail.startswith("code raised SystemExit")


def test_an_infinite_loop_is_killed_at_the_timeout():
    limits = Limits(timeout_s=1.0, memory_mb=256)
    t0 = time.monotonic()
    score = run("def add(a, b):\n    while True:\n        pass", limits=limits)
    assert time.monotonic() - t0 < 6.0  # killed near its 1 s, not left to run (slack: load)
    # A busy loop meets the wall-clock timeout and the CPU limit (both 1 s) together: which
    # one kills it first depends on the machine's load; either way it is killed, scored 0.
    assert score.value == 0.0
    assert score.detail.startswith(("timed out after 1 s (killed)",
                                    "killed by SIGXCPU (CPU limit 1 s)")), score.detail


def test_the_cpu_limit_kills_before_a_longer_timeout():
    limits = Limits(timeout_s=8.0, cpu_s=1, memory_mb=256)
    t0 = time.monotonic()
    score = run("x = 0\nwhile True:\n    x += 1", limits=limits)
    assert time.monotonic() - t0 < 7.5  # before the 8 s wall-clock timeout
    assert score.value == 0.0 and "SIGXCPU" in score.detail and "CPU limit 1 s" in score.detail


def test_unbounded_memory_hits_the_memory_limit():
    score = run("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))")
    assert score.value == 0.0
    assert score.detail.startswith("code raised MemoryError (memory limit 256 MiB)")


def test_printing_gigabytes_is_cut_off():
    t0 = time.monotonic()
    score = run("import sys\nfor _ in range(10_000):\n    sys.stdout.write('x' * 1_000_000)")
    assert time.monotonic() - t0 < 8.0  # cut off, not left to write its 10 GB
    assert score.value == 0.0 and score.detail.startswith("printed more than 65536 bytes")


def test_a_child_killed_with_output_unread_is_reaped_at_once():
    # asyncio's wait() also waits for the pipes to close; a stdout transport paused on
    # unread output never saw its end, and wait() hung (twice in full test runs).
    import sys

    from eval.scoring._code import _kill, _reap

    async def main() -> tuple[int | None, float]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)",
            stdout=asyncio.subprocess.PIPE, start_new_session=True)
        assert proc.stdout is not None
        await proc.stdout.read(1 << 16)
        await asyncio.sleep(0.3)  # the reader's buffer fills and its transport pauses
        _kill(proc)
        t0 = time.monotonic()
        return await _reap(proc, timeout_s=30.0), time.monotonic() - t0

    returncode, waited = asyncio.run(main())
    assert returncode == -9 and waited < 15.0  # the exit itself, not the fallback at 30 s


def test_a_socket_connection_is_refused():
    answer = f"import socket\nsocket.create_connection(('127.0.0.1', 9))\n{ADD}"
    score = run(answer)
    assert score.value == 0.0 and score.detail.startswith("network refused (socket.")


def test_a_refused_attempt_scores_zero_even_when_the_answer_carries_on():
    answer = (f"import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com')\n"
              f"except Exception:\n    pass\n{ADD}")
    score = run(answer)
    assert score.value == 0.0
    assert re.fullmatch(r"network refused \(socket\.\w+\); 2/2 tests passed", score.detail)


@pytest.mark.parametrize(("attempt", "event"), [
    ("import subprocess\nsubprocess.run(['echo', 'hi'])", "subprocess.Popen"),
    ("import os\nos.system('echo hi')", "os.system"),
    ("import os\nos.execv('/bin/echo', ['echo'])", "os.exec"),
    ("import os\nos.fork()", "os.fork"),
    ("import os\nos.posix_spawn('/bin/echo', ['echo'], {})", "os.posix_spawn"),
    ("import os\nos.kill(os.getppid(), 9)", "os.kill"),
    ("import _posixsubprocess\n_posixsubprocess.fork_exec()", "_posixsubprocess.fork_exec"),
    ("import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
     "import _posixsubprocess"),
    ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "os.fork"),
])
def test_process_creation_is_refused(attempt, event):
    score = run(f"{attempt}\n{ADD}")
    assert score.value == 0.0
    assert score.detail.startswith(f"process creation refused ({event}")


def test_ctypes_cannot_reach_libc():
    score = run(f"import ctypes\nctypes.CDLL(None).system(b'echo hi')\n{ADD}")
    assert score.value == 0.0 and score.detail.startswith("C function lookup refused")


def test_writes_outside_the_sandbox_are_refused(tmp_path):
    target = tmp_path / "written.txt"
    score = run(f"open({str(target)!r}, 'w').write('x')\n{ADD}")
    assert score.value == 0.0 and score.detail.startswith("file write outside the sandbox")
    assert not target.exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    assert run(f"import os\nos.remove({str(victim)!r})\n{ADD}").value == 0.0
    assert victim.read_text() == "keep"


def test_the_answer_runs_isolated_in_a_fresh_directory_deleted_afterwards(monkeypatch):
    monkeypatch.setenv("CONTEXTFORGE_TEST_SECRET", "s3cret")
    checks = ["import os, sys",
              "assert 'CONTEXTFORGE_TEST_SECRET' not in os.environ",
              "assert sys.flags.isolated == 1",
              "assert os.listdir('.') == []",
              "open('scratch.txt', 'w').write('ok')",  # its own directory is writable
              "assert input is not None and sys.stdin.read() == ''",
              "assert False, os.getcwd()"]
    score = code("x = 1", checks, limits=FAST)
    assert score.detail.startswith("6/7 tests passed; first failure: test 7 (AssertionError: ")
    workdir = Path(score.detail.split("AssertionError: ")[1].rstrip(")"))
    assert workdir.name.startswith("contextforge-code-") and not workdir.exists()


def test_an_early_exit_cannot_pass_for_success():
    score = run(f"{ADD}import os\nos._exit(0)")
    assert score.value == 0.0
    assert score.detail.startswith("exited with code 0 before reporting")


def test_code_needs_tests():
    with pytest.raises(ValueError, match="test"):
        code(ADD, [])


# --- asyncio ------------------------------------------------------------------------------

def test_acode_leaves_the_event_loop_free():
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        score = await acode("import time\ntime.sleep(0.5)\n" + ADD, TESTS, limits=FAST)
        task.cancel()
        return score, ticks

    score, ticks = asyncio.run(main())
    assert score.value == 1.0 and ticks >= 6


def test_acode_bounds_concurrency_with_the_semaphore():
    sleepy = "import time\ntime.sleep(0.2)\n" + ADD

    async def batch(limit: int) -> float:
        sem = asyncio.Semaphore(limit)
        t0 = time.monotonic()
        scores = await asyncio.gather(*(acode(sleepy, TESTS, limits=FAST, semaphore=sem)
                                        for _ in range(3)))
        assert [s.value for s in scores] == [1.0, 1.0, 1.0]
        return time.monotonic() - t0

    assert asyncio.run(batch(1)) >= 0.6  # one child at a time: three sleeps in a row
    assert asyncio.run(batch(3)) < 0.6
