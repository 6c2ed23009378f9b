"""The code blocks of README.md and docs/**/*.md run, so that they cannot go stale.

One test per page: its ``python`` blocks run in order in one namespace, its
``console`` blocks' ``$ `` commands in bash, all in a fresh copy of a folder
prepared once per session, which holds (``docs_examples.WORKSPACE_NAMES``):

- ``speech.wav``: 2 s of synthetic speech, 16 kHz mono int16;
- ``template/``: a drawn face, 12 frames of 320 x 240 (``full_body_img/``, ``landmarks/``);
- ``models/unet.onnx``: an fp32 U-Net (mode ave) with fixed random weights;
- ``models/audio_encoder.onnx``: the audio encoder with fixed random weights;
- ``jobs.jsonl`` and ``jobs.csv``: a batch manifest of two jobs (``one.mp4``, ``two.mp4``).

Markers, an HTML comment on the line before a fence: ``<!-- skip: reason -->``
(never run; the reason is required), ``<!-- background -->`` (a server: started,
waited for on its port, stopped at the end of the page; 127.0.0.1 only) and
``<!-- slow -->`` (run only by ``pytest -m slow``). Only ``python``, ``pycon``
and ``console`` blocks run; ``bash``, ``toml``, ``text``, ``json``... never do.
``docs/development.md`` says the same for the people who write the pages; the
machinery is ``tests/docs_examples.py``, tested below on small pages of its own.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from docs_examples import (
    RUN_LANGUAGES,
    WORKSPACE_NAMES,
    Background,
    Block,
    DocsError,
    copy_workspace,
    display,
    environment,
    make_workspace,
    markdown_files,
    parse,
    read_blocks,
    run_page,
    server_address,
)

PAGES = markdown_files()


def _slow_pages() -> list[Path]:
    pages = []
    for page in PAGES:
        try:
            if any("slow" in b.markers and b.language in RUN_LANGUAGES for b in read_blocks(page)):
                pages.append(page)
        except DocsError:
            pass  # reported by the page's own test
    return pages


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("docs") / "workspace")


@pytest.fixture(scope="session")
def docs_env(tmp_path_factory) -> dict[str, str]:
    return environment(tmp_path_factory.mktemp("docs-cache"))


def _run(page: Path, request: pytest.FixtureRequest, tmp_path: Path, *, slow: bool) -> None:
    try:
        blocks = read_blocks(page)
    except DocsError as exc:
        pytest.fail(str(exc), pytrace=False)
    if not any(b.runs for b in blocks):
        pytest.skip(f"{display(page)}: no block to run")
    # Made (once) only when a page has something to run.
    workspace, env = request.getfixturevalue("docs_workspace"), request.getfixturevalue("docs_env")
    cwd = copy_workspace(workspace, tmp_path / "work")
    try:
        report = run_page(blocks, cwd, env, slow=slow)
    except (AssertionError, DocsError) as exc:
        pytest.fail(str(exc), pytrace=False)
    print("\n".join(report))  # seconds per block: pytest -rP shows them


@pytest.mark.parametrize("page", PAGES, ids=display)
def test_docs_page(page, request, tmp_path):
    """The page's blocks, those marked slow left out."""
    slow_twin = f"test_docs_page_slow[{display(page)}]"
    if any(item.name == slow_twin for item in request.session.items):
        pytest.skip(f"{slow_twin} runs this page whole")
    _run(page, request, tmp_path, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", _slow_pages(), ids=display)
def test_docs_page_slow(page, request, tmp_path):
    """A page that has blocks marked slow, every block."""
    _run(page, request, tmp_path, slow=True)


def test_development_page_lists_the_workspace():
    """docs/development.md tells the page writers the names they may use."""
    page = Path(__file__).resolve().parents[1] / "docs" / "development.md"
    if not page.is_file():
        pytest.skip("no docs/ (an installed package's tests)")
    text = page.read_text(encoding="utf-8")
    missing = [name for name in WORKSPACE_NAMES if f"`{name}`" not in text]
    assert not missing, f"docs/development.md does not list {missing}"


def test_architecture_page_states_the_layers():
    """docs/architecture.md's table of layers is LAYERS of tests/test_imports.py."""
    import re

    from test_imports import LAYERS

    page = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
    if not page.is_file():
        pytest.skip("no docs/ (an installed package's tests)")
    rows = re.findall(r"^\| (\d+) \| (.*) \|$", page.read_text(encoding="utf-8"), re.MULTILINE)
    stated = [
        set(re.findall(r"`(\w+)`", modules)) | ({""} if "the package itself" in modules else set())
        for _, modules in rows
    ]
    assert stated == LAYERS, "update the table of layers in docs/architecture.md to LAYERS of tests/test_imports.py"


# -- the machinery, on small pages of its own ---------------------------------------------------

PAGE = """\
# A page

```python
x = 1
```

Text, then an indented block in a list:

1. step

   ```python
   x += 1
   ```

<!-- skip: needs a GPU -->
```python
raise RuntimeError("never runs")
```

````markdown
```python
raise RuntimeError("inside a longer fence: not a block of its own")
```
````

```bash
exit 1
```

<!-- slow -->
```console
$ echo slow \\
    and continued
slow and continued
```
"""


def _page(tmp_path: Path, text: str, name: str = "page.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_blocks_and_markers(tmp_path):
    blocks = read_blocks(_page(tmp_path, PAGE))
    assert [(b.line, b.language) for b in blocks] == [
        (3, "python"),
        (11, "python"),
        (16, "python"),
        (20, "markdown"),
        (26, "bash"),
        (31, "console"),
    ]
    assert blocks[1].code == "x += 1\n"  # dedented to its fence
    assert blocks[2].markers == {"skip": "needs a GPU"} and not blocks[2].runs
    assert not blocks[3].runs and not blocks[4].runs  # illustrations
    assert blocks[5].markers == {"slow": ""}


@pytest.mark.parametrize(
    ("comment", "message"),
    [
        ("<!-- skip -->", "needs a reason"),
        ("<!-- skip:   -->", "needs a reason"),
        ("<!-- sikp: typo -->", "unknown marker"),
    ],
)
def test_bad_markers_fail_with_the_page_line(tmp_path, comment, message):
    path = _page(tmp_path, f"# t\n\n{comment}\n```python\npass\n```\n")
    with pytest.raises(DocsError, match=rf"page\.md:4: .*{message}"):
        read_blocks(path)


def test_a_marker_away_from_its_fence_is_an_error(tmp_path):
    with pytest.raises(DocsError, match=r"p\.md:3: a marker goes on the line just before the fence"):
        parse("# t\n\n<!-- skip: a reason -->\n\n```python\npass\n```\n", tmp_path / "p.md")
    parse("# t\n\n<!-- an ordinary comment -->\n\ntext\n", tmp_path / "p.md")  # not a marker: fine


def test_background_marks_console_blocks_only(tmp_path):
    with pytest.raises(DocsError, match="console block"):
        parse("<!-- background -->\n```python\npass\n```\n", tmp_path / "p.md")


def test_blocks_share_a_namespace_and_leave_out_slow_and_skipped(tmp_path):
    page = _page(tmp_path, PAGE)
    report = run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=False)
    assert [line.split(": ", 1)[1].split(",")[0] for line in report] == [
        "python block",
        "python block",
        "skipped (needs a GPU)",
        "slow (runs with -m slow)",
    ]
    report = run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=True)
    assert report[-1].split(": ", 1)[1].startswith("console block,")


def test_python_failure_names_the_page_line(tmp_path):
    page = _page(tmp_path, "# t\n\n```python\na = 1\nb = a / 0\n```\n")
    with pytest.raises(AssertionError, match=r"page\.md:5: python block \(at line 3\) raised ZeroDivisionError"):
        run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=False)


def test_pycon_prompts_are_stripped_and_output_ignored(tmp_path):
    page = _page(tmp_path, "```pycon\n>>> x = [1,\n...      2]\n>>> x\n[1, 2, 'not compared']\n>>> y = len(x)\n```\n")
    run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=False)


def test_console_runs_commands_ignores_output_and_names_a_failing_line(tmp_path):
    ok = "```console\n$ echo hello > out.txt\nany output at all\n$ test -s out.txt\n```\n"
    run_page(read_blocks(_page(tmp_path, ok)), tmp_path, environment(tmp_path / "cache"), slow=False)
    assert (tmp_path / "out.txt").read_text() == "hello\n"

    bad = "# t\n\n```console\n$ true\n$ echo to stderr >&2; exit 3\n$ echo never\n```\n"
    with pytest.raises(
        AssertionError, match=r"(?s)page\.md:5: command exited with status 3:\n\$ echo to stderr.*to stderr"
    ):
        run_page(read_blocks(_page(tmp_path, bad)), tmp_path, environment(tmp_path / "cache"), slow=False)


def test_console_commands_find_the_installed_cli(tmp_path):
    page = "```console\n$ synctalk-fast --version\n$ python -c 'import synctalk_fast'\n```\n"
    run_page(read_blocks(_page(tmp_path, page)), tmp_path, environment(tmp_path / "cache"), slow=False)


def test_server_address():
    assert server_address("synctalk-fast serve --avatar a=t:u.onnx") == ("127.0.0.1", 8000)
    assert server_address("synctalk-fast serve --port 8765 --host localhost") == ("localhost", 8765)
    assert server_address("x --port=9000 --host=0.0.0.0") == ("0.0.0.0", 9000)


SERVER = """\
import argparse, http.server
p = argparse.ArgumentParser()
p.add_argument("--port", type=int)
p.add_argument("--host", default="127.0.0.1")
a = p.parse_args()
http.server.HTTPServer((a.host, a.port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_background_server_runs_for_the_rest_of_the_page(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "hello.txt").write_text("hello")
    port = _free_port()
    page = _page(
        tmp_path,
        f"<!-- background -->\n```console\n$ {sys.executable} server.py --port {port}\n```\n\n"
        f"```python\nimport urllib.request\n"
        f"assert urllib.request.urlopen('http://127.0.0.1:{port}/hello.txt').read() == b'hello'\n```\n",
    )
    run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=False)
    with socket.socket() as s:  # stopped at the end of the page
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_background_server_must_stay_on_loopback(tmp_path):
    block = Block(tmp_path / "p.md", 1, "console", "$ x serve --host 0.0.0.0\n", {"background": ""})
    with pytest.raises(DocsError, match="127.0.0.1 only"):
        Background(block, tmp_path, environment(tmp_path / "cache"))


def test_background_server_that_exits_is_reported(tmp_path):
    port = _free_port()
    page = _page(
        tmp_path,
        f"<!-- background -->\n```console\n$ {sys.executable} -c \"print('cannot start'); raise SystemExit(4)\" --port {port}\n```\n",
    )
    with pytest.raises(AssertionError, match=r"(?s)page\.md:3: the server exited with status 4.*cannot start"):
        run_page(read_blocks(page), tmp_path, environment(tmp_path / "cache"), slow=False)


def test_workspace_has_the_documented_names(docs_workspace):
    for name in WORKSPACE_NAMES:
        assert (docs_workspace / name).exists(), name
    assert len(list((docs_workspace / "template" / "full_body_img").iterdir())) == 12
