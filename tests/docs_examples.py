"""Running the code blocks of the documentation: the machinery of ``test_docs_examples.py``.

The fenced code blocks of ``README.md`` and of every ``docs/**/*.md`` page are
run, so that an example cannot go stale:

- ``python`` (and ``pycon``) blocks are executed in order, all the blocks of a
  page in one namespace, like a doctest session (``>>>`` / ``...`` prompts are
  stripped; what follows a prompt is output and is not compared);
- ``console`` blocks: each line that starts with ``$ `` is a command (a line
  ending with ``\\`` continues on the next), run with bash; a command must exit
  with status 0. Every other line is output, shown, never compared;
- every other language (``bash``, ``toml``, ``text``, ``json``, ...) is an
  illustration and never runs.

An HTML comment on the line just before a fence marks the block:

- ``<!-- skip: reason -->``: never run (installs, GPUs, a cluster, a deploy
  command). The reason is required;
- ``<!-- background -->``: a ``console`` block of one command that starts a
  server (``synctalk-fast serve ...``): it is started, waited for until its
  port answers (at most :data:`SERVER_WAIT` seconds), left running while the
  rest of the page runs (so that a client example can talk to it), and
  terminated at the end of the page. It must listen on 127.0.0.1 only;
- ``<!-- slow -->``: a block that takes long; its page runs it only in the
  tests marked ``slow`` (``pytest -m slow``), the other blocks run either way.

Markers can be combined on that line (``<!-- slow --> <!-- background -->``);
an unknown marker is an error.

Every block runs in a copy of one prepared folder, made once per test session
(:func:`make_workspace`) with the package's own demo helpers, whose names the
pages may use (:data:`WORKSPACE_NAMES`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The names a page may use, relative to the folder its blocks run in.
WORKSPACE_NAMES = {
    "speech.wav": "2 s of synthetic speech, 16 kHz mono int16 (synctalk_fast.demo.synthetic_speech, seed 0)",
    "template/": "a drawn face, 12 frames of 320 x 240: full_body_img/0.jpg .. 11.jpg, landmarks/0.lms .. 11.lms",
    "models/unet.onnx": "an fp32 U-Net (mode ave) with fixed random weights (random_state_dict('unet'), seed 0)",
    "models/audio_encoder.onnx": "the audio encoder with fixed random weights (random_state_dict('audio_encoder'))",
    "jobs.jsonl": "a batch manifest of two jobs, one.mp4 and two.mp4, from speech.wav on template/",
    "jobs.csv": "the same two jobs as CSV",
}
#: Seconds a background server may take to answer on its port.
SERVER_WAIT = 60.0
#: Seconds one console block may run.
CONSOLE_TIMEOUT = 600.0
#: The languages that run; every other block is an illustration.
RUN_LANGUAGES = {"python", "py", "pycon", "console"}
MARKERS = {"skip", "background", "slow"}

_FENCE = re.compile(r"^(?P<indent> {0,12})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"<!--\s*(?P<name>[\w-]+)\s*(?::(?P<reason>.*?))?\s*-->")
_COMMENT_LINE = re.compile(r"^\s*(<!--.*?-->\s*)+$")


class DocsError(Exception):
    """A page's block cannot be run as written (a marker without its reason, ...)."""


@dataclass
class Block:
    """One fenced code block of a page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)  # marker -> reason ("" when none)

    @property
    def first_line(self) -> int:
        """The page line of the block's first line of code."""
        return self.line + 1

    @property
    def where(self) -> str:
        return f"{display(self.path)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and "skip" not in self.markers


def display(path: Path) -> str:
    """A page's path as the test names it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md, CONTRIBUTING.md (the site includes it) and every page under
    docs/ (built output excluded), sorted."""
    found = [root / name for name in ("README.md", "CONTRIBUTING.md") if (root / name).is_file()]
    docs = root / "docs"
    if docs.is_dir():
        found += sorted(p for p in docs.rglob("*.md") if "_build" not in p.relative_to(docs).parts)
    return found


def _markers(line: str, where: str) -> dict[str, str]:
    found = {}
    for m in _MARKER.finditer(line):
        name, reason = m.group("name"), (m.group("reason") or "").strip()
        if name not in MARKERS:
            raise DocsError(f"{where}: unknown marker <!-- {name} -->; the markers are {', '.join(sorted(MARKERS))}")
        if name == "skip" and not reason:
            raise DocsError(f"{where}: <!-- skip --> needs a reason: <!-- skip: why this block cannot run -->")
        found[name] = reason
    return found


def _check_dangling_marker(lines: list[str], i: int, path: Path) -> None:
    """A marker that does not stand on the line just before a fence would be
    ignored: it is an error instead."""
    if _COMMENT_LINE.match(lines[i]) and any(m.group("name") in MARKERS for m in _MARKER.finditer(lines[i])):
        if i + 1 >= len(lines) or not _FENCE.match(lines[i + 1]):
            raise DocsError(f"{display(path)}:{i + 1}: a marker goes on the line just before the fence it marks")


def parse(text: str, path: Path) -> list[Block]:
    """The fenced code blocks of a markdown text, with their markers."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            _check_dangling_marker(lines, i, path)
            i += 1
            continue
        indent, fence, info = len(m.group("indent")), m.group("fence"), m.group("info").strip()
        start = i
        body = []
        i += 1
        # The closing fence: the same character, at least as long, nothing after it.
        closing = re.compile(rf"^ {{0,{indent + 3}}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        i += 1  # past the closing fence (or the end of the text)
        language = info.split()[0].lower() if info else ""
        where = f"{display(path)}:{start + 1}"
        previous = lines[start - 1] if start > 0 else ""
        markers = _markers(previous, where) if _COMMENT_LINE.match(previous) else {}
        block = Block(path, start + 1, language, "\n".join(body) + "\n", markers)
        if "background" in markers and language != "console":
            raise DocsError(f"{where}: <!-- background --> marks a console block, not {language or 'a plain'} block")
        blocks.append(block)
    return blocks


def read_blocks(path: Path) -> list[Block]:
    return parse(path.read_text(encoding="utf-8"), path)


# -- the prepared folder -------------------------------------------------------------------


def make_workspace(folder: Path) -> Path:
    """Write the files of :data:`WORKSPACE_NAMES` into ``folder`` (with the
    package's demo helpers, as ``synctalk-fast demo`` does)."""
    import json

    import soundfile as sf

    from synctalk_fast import models
    from synctalk_fast.demo import synthetic_speech, synthetic_template

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "speech.wav", synthetic_speech(2.0, seed=0), 16000, subtype="PCM_16")
    synthetic_template(folder / "template", frames=12, width=320, height=240, seed=0)
    for kind in ("unet", "audio_encoder"):
        models.export_onnx(models.random_state_dict(kind, seed=0), folder / "models" / f"{kind}.onnx", kind=kind)
    jobs = [
        {
            "audio": "speech.wav",
            "template": "template",
            "unet": "models/unet.onnx",
            "audio_encoder": "models/audio_encoder.onnx",
            "output": name,
        }
        for name in ("one.mp4", "two.mp4")
    ]
    (folder / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    keys = list(jobs[0])
    csv_lines = [",".join(keys)] + [",".join(job[k] for k in keys) for job in jobs]
    (folder / "jobs.csv").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    return folder


def copy_workspace(source: Path, target: Path) -> Path:
    """A fresh copy of the prepared folder; files are hard links where the file
    system allows (the pages write new files, never into these)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)
    return target


def environment(cache: Path) -> dict[str, str]:
    """The environment of the console commands: this interpreter's scripts
    first on PATH (``synctalk-fast``, ``python``), caches in ``cache``."""
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    env["SYNCTALK_FAST_CACHE"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)  # the installed package, never the source tree (no compiled core)
    return env


# -- running blocks ------------------------------------------------------------------------


def python_source(block: Block) -> str:
    """The code of a python block; prompts (``>>>``, ``...``) stripped and the
    output lines after them dropped when it is written as a session."""
    lines = block.code.splitlines()
    if not any(line.startswith(">>>") for line in lines):
        return block.code
    code = []
    for line in lines:
        if line.startswith((">>> ", "... ")) or line in (">>>", "..."):
            code.append(line[4:])
        else:
            code.append("")  # output: keeps the line numbers
    return "\n".join(code) + "\n"


def run_python(block: Block, namespace: dict) -> None:
    """Execute a python block in ``namespace``; a failure names the page line."""
    source = python_source(block)
    # Padding puts each statement on its line of the page: a traceback then
    # shows the page's line numbers (and its text: the page is the file).
    padded = "\n" * (block.first_line - 1) + source
    try:
        code = compile(padded, str(block.path), "exec")
    except SyntaxError as exc:
        raise AssertionError(f"{display(block.path)}:{exc.lineno}: python block does not compile: {exc.msg}") from None
    try:
        exec(code, namespace)
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(block.path)]
        line = frames[-1].lineno if frames else block.first_line
        detail = "".join(traceback.format_exception(exc)[-12:])
        raise AssertionError(
            f"{display(block.path)}:{line}: python block (at line {block.line}) raised "
            f"{type(exc).__name__}: {exc}\n{detail}"
        ) from None


@dataclass
class Command:
    line: int  # page line of its ``$ ``
    text: str


def console_commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block (``\\`` continues a line)."""
    commands: list[Command] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ ") and line[2:].strip():
            start = i
            text = line[2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            commands.append(Command(block.first_line + start, text.strip()))
        i += 1
    return commands


def run_console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run a console block's commands in one bash, in order; each must exit 0."""
    commands = console_commands(block)
    if not commands:
        return
    # The EXIT trap names the command that ended the script: a failure under
    # ``set -e`` or an ``exit`` of its own.
    report = 'rc=$?; [ $rc -eq 0 ] || echo "docs-example: exit status $rc at page line $_DOCS_LINE" >&2'
    script = ["set -e", f"trap '{report}' EXIT"]
    for c in commands:
        script += [f"_DOCS_LINE={c.line}", c.text]
    try:
        proc = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CONSOLE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{block.where}: console block ran over {CONSOLE_TIMEOUT:.0f} s\n{exc.output}") from None
    if proc.returncode != 0:
        m = re.search(r"exit status (\d+) at page line (\d+)", proc.stderr)
        line = int(m.group(2)) if m else block.line
        command = next((c.text for c in commands if c.line == line), "?")
        output = _tail(proc.stdout + proc.stderr)
        raise AssertionError(
            f"{display(block.path)}:{line}: command exited with status {m.group(1) if m else proc.returncode}:\n"
            f"$ {command}\n{output}"
        )


def _tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return textwrap.indent("\n".join(kept), "    ")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def server_address(command: str) -> tuple[str, int]:
    """The host and port a server command listens on (``--host``, ``--port``;
    the serve command's defaults 127.0.0.1 and 8000)."""
    words = shlex.split(command.replace("\\\n", " "))
    host, port = "127.0.0.1", 8000
    for i, word in enumerate(words):
        for name in ("--host", "--port"):
            value = None
            if word == name and i + 1 < len(words):
                value = words[i + 1]
            elif word.startswith(name + "="):
                value = word.split("=", 1)[1]
            if value is not None:
                if name == "--host":
                    host = value
                else:
                    port = int(value)
    return host, port


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (Linux /proc; empty elsewhere)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                address, _, hexport = cols[1].partition(":")
                if cols[3] == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net writes them (32-bit words, host byte order).
_LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


class Background:
    """A server started by a ``<!-- background -->`` block, running until :meth:`stop`."""

    def __init__(self, block: Block, cwd: Path, env: dict[str, str]):
        commands = console_commands(block)
        if len(commands) != 1:
            raise DocsError(f"{block.where}: a <!-- background --> block holds one $ command, not {len(commands)}")
        self.block, self.command = block, commands[0]
        self.host, self.port = server_address(self.command.text)
        if self.host not in LOOPBACK:
            raise DocsError(f"{block.where}: a background server must listen on 127.0.0.1 only, not {self.host}")
        if _port_open(self.port):
            raise AssertionError(f"{block.where}: port {self.port} is already in use; the server cannot start")
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            ["bash", "-c", self.command.text],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends all of it
        )

    def output(self) -> str:
        self.log.seek(0)
        return _tail(self.log.read())

    def wait_ready(self, timeout: float = SERVER_WAIT) -> None:
        where = f"{display(self.block.path)}:{self.command.line}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{where}: the server exited with status {self.proc.returncode} before answering:\n"
                    f"$ {self.command.text}\n{self.output()}"
                )
            if _answers(self.port):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(
                f"{where}: the server did not answer on port {self.port} within {timeout:.0f} s:\n"
                f"$ {self.command.text}\n{self.output()}"
            )
        others = {a for a in _listening_addresses(self.port) if a not in _LOOPBACK_HEX}
        if others:
            raise AssertionError(f"{where}: the server listens beyond 127.0.0.1 (port {self.port}): {sorted(others)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.log.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers(port: int) -> bool:
    """Whether something answers HTTP on the port (``/healthz``; any status will do)."""
    if not _port_open(port):
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_page(blocks: list[Block], cwd: Path, env: dict[str, str], *, slow: bool) -> list[str]:
    """Run a page's blocks in order in ``cwd``; returns a line per block: the
    seconds it took, or why it did not run. ``slow=False`` leaves out the
    blocks marked ``slow``."""
    namespace: dict = {"__name__": "__main__"}
    servers: list[Background] = []
    report = []
    saved_env = dict(os.environ)
    try:
        os.environ.update({k: env[k] for k in ("SYNCTALK_FAST_CACHE",)})
        with _chdir(cwd):
            for block in blocks:
                if block.language not in RUN_LANGUAGES:
                    continue
                if "skip" in block.markers:
                    report.append(f"{block.where}: skipped ({block.markers['skip']})")
                    continue
                if "slow" in block.markers and not slow:
                    report.append(f"{block.where}: slow (runs with -m slow)")
                    continue
                start = time.perf_counter()
                if "background" in block.markers:
                    server = Background(block, cwd, env)
                    servers.append(server)
                    server.wait_ready()
                elif block.language == "console":
                    run_console(block, cwd, env)
                else:
                    run_python(block, namespace)
                report.append(f"{block.where}: {block.language} block, {time.perf_counter() - start:.1f} s")
    finally:
        namespace.clear()  # the page's pipelines and sessions go now, not at the end of the run
        gc.collect()
        for server in reversed(servers):
            server.stop()
        os.environ.clear()
        os.environ.update(saved_env)
    return report
