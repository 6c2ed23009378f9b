"""The plug-ins' frameworks stay optional: never imported by the package, named when missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("pipecat", "livekit")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_synctalk_fast_imports_no_framework():
    code = (
        "import sys, synctalk_fast, synctalk_fast.integrations, synctalk_fast.integrations.common\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module, framework, message",
    [
        (
            "pipecat",
            "pipecat",
            'synctalk_fast.integrations.pipecat needs Pipecat: pip install "synctalk-fast[pipecat]"',
        ),
        (
            "livekit",
            "livekit",
            'synctalk_fast.integrations.livekit needs LiveKit Agents: pip install "synctalk-fast[livekit]"',
        ),
    ],
)
def test_a_missing_framework_names_the_extra(module, framework, message):
    code = (
        "import sys\n"
        f"sys.modules[{framework!r}] = None  # as if not installed\n"
        "try:\n"
        f"    import synctalk_fast.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == message
