"""A table of the mistakes a user makes and the faults a machine has: each ends in one `error:`
line and exit 2, with no traceback, nothing written outside `--out` and no empty `--out` left
behind. Every case runs in a folder of its own, which is also the working directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run

MODEL = ["--model", "test_resnet", "--weights", "none"]
BUILD = ["build", *MODEL, "--layers", "0", "--units", "1", "--steps", "1", "--neurons", "0", "--variants", "0",
         "--classes", "0", "--dreams", "0", "-q", "--out", "out"]
RENDER = ["render", *MODEL, "--layer", "0", "--unit", "0", "--steps", "1"]


def git_repo(d: Path) -> None:
    subprocess.run(["git", "init", "-q", str(d)], check=True)


def git_repo_with_a_dead_remote(d: Path) -> None:
    git_repo(d)
    subprocess.run(["git", "-C", str(d), "remote", "add", "origin", str(d / "no-such-repo.git")], check=True)


def folder_with_a_1px_image(d: Path) -> None:
    from PIL import Image

    (d / "imgs").mkdir()
    Image.new("RGB", (1, 1)).save(d / "imgs" / "dot.png")


CASES = {
    # (setup of the case's folder, arguments, what the one line must say)
    "deploy to a remote that does not exist": (git_repo, ["deploy", "--remote", "nosuch"],
                                               ["--remote nosuch", "no such remote", "git remote add"]),
    "deploy to a remote that cannot be reached": (git_repo_with_a_dead_remote, ["deploy"],
                                                  ["--remote origin cannot be reached", "no-such-repo.git"]),
    "render into an unwritable folder": (None, [*RENDER, "--out", "/proc/reportgen/r.png"],
                                         ["nothing can be written in /proc"]),
    "render onto a folder": (lambda d: (d / "d.png").mkdir(), [*RENDER, "--out", "d.png"], ["is a folder"]),
    "render a layer selector of several layers": (None, ["render", *MODEL, "--layer", "0,1", "--unit", "0",
                                                         "--out", "r.png"], ["--layer '0,1' selects 2 layers"]),
    "render an unknown layer": (None, ["render", *MODEL, "--layer", "nope", "--unit", "0", "--out", "r.png"],
                                ["--layer 'nope' matches no layer"]),
    "a folder as --config": (lambda d: (d / "cfg").mkdir(), [*BUILD, "--config", "cfg"], ["--config cfg is a folder"]),
    "a config whose [build] is not a table": (lambda d: (d / "c.toml").write_text("build = 1\n"),
                                               [*BUILD, "--config", "c.toml"], ["must be a table"]),
    "a config with model = []": (lambda d: (d / "c.toml").write_text("model = []\n"),
                                 ["build", "--config", "c.toml", "--out", "out"], ["model = [] names no model"]),
    "a seed past 64 bits": (None, [*BUILD, "--seed", "1180591620717411303424"], ["--seed", "from 0 to"]),
    "a negative seed": (None, [*BUILD, "--seed", "-1"], ["--seed", "from 0 to"]),
    "a negative number of neuron groups": (None, [*BUILD, "--groups", "-1"], ["--groups -1", "at least 0"]),
    "neuron groups in TOML that are not a number": (lambda d: (d / "g.toml").write_text('groups = "x"\n'),
                                                    [*BUILD, "--config", "g.toml"], ["--groups 'x'", "whole number"]),
    "a canvas too big for any machine": (None, [*BUILD, "--size", "100000"], ["--size 100000", "at most 4096"]),
    "a reference folder of one 1x1 px image": (folder_with_a_1px_image, [*BUILD, "--images", "imgs"],
                                                ["dot.png: too small (1x1 px)"]),
    "a reference folder that does not exist": (None, [*BUILD, "--images", "nope"], ["no such folder"]),
    "a file as the reference folder": (lambda d: (d / "a.jpg").write_bytes(b"x"), [*BUILD, "--images", "a.jpg"],
                                       ["--images a.jpg is a file"]),
    "a folder as --weights": (lambda d: (d / "w.pth").mkdir(),
                              ["build", "--model", "test_resnet", "--weights", "w.pth", "--out", "out"],
                              ["--weights w.pth is a folder"]),
    "a file as --store": (lambda d: (d / "store").write_text("x"), [*BUILD, "--store", "store"],
                          ["Not a directory", "check the path"]),
    "a text file as --weights": (lambda d: (d / "w.pth").write_text("hello, weights\n"),
                                 ["build", "--model", "test_resnet", "--weights", "w.pth", "--out", "out"],
                                 ["not a PyTorch checkpoint"]),
    "an empty file as --weights": (lambda d: (d / "w.pth").write_bytes(b""),
                                   ["build", "--model", "test_resnet", "--weights", "w.pth", "--out", "out"],
                                   ["the file is empty"]),
    "--units that is not a number": (None, [*BUILD[:-2], "--units", "abc", "--out", "out"],
                                     ["--units 'abc' is not a number"]),
    "--units written with a superscript": (None, [*BUILD[:-2], "--units", "²", "--out", "out"], ["not a number"]),
    "'all' inside a list of layers": (None, [*BUILD[:-2], "--layers", "all,0", "--out", "out"],
                                      ["'all' selects every layer", "alone"]),
    "a preset that does not exist": (None, [*BUILD, "--preset", "fastest"], ["'fastest' is not one of",
                                                                           "reportgen build -h"]),
    "a misspelt command": (None, ["buidl"], ["No such command 'buidl'", "build"]),
    "a seed that is not a number": (None, [*BUILD, "--seed", "abc"], ["--seed", "not a valid integer"]),
    "serve a report never built": (None, ["serve", "--out", "missing-report"], ["reportgen build"]),
    "serve a report whose pages are gone": (lambda d: ((d / "rep").mkdir(), (d / "rep" / "mkdocs.yml").write_text(
        "site_name: t\n")), ["serve", "--out", "rep"], ["mkdocs.yml does not describe a usable site", "docs",
                                                          "reportgen build --out rep"]),
    "serve at a malformed address": (lambda d: ((d / "rep" / "docs").mkdir(parents=True), (d / "rep" / "mkdocs.yml")
                                                .write_text("site_name: t\n")),
                                     ["serve", "--out", "rep", "--address", "8000"], ["--address '8000'", "host:port"]),
    "serve at a port out of range": (lambda d: ((d / "rep" / "docs").mkdir(parents=True), (d / "rep" / "mkdocs.yml")
                                                .write_text("site_name: t\n")),
                                     ["serve", "--out", "rep", "--address", "127.0.0.1:99999"], ["1 to 65535"]),
}


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, case):
    setup, args, needles = CASES[case]
    monkeypatch.chdir(tmp_path)
    if setup:
        setup(tmp_path)
    before = files_under(tmp_path)
    code, output = run(*args)
    assert code == 2, output
    assert_one_line_error(output, *needles)
    assert files_under(tmp_path) == before  # nothing written, and no empty --out left behind


def test_an_os_error_on_a_users_path_is_one_line(tmp_path, monkeypatch):
    """The boundary's rule, not a list of patches: an OSError that names a file and escapes a
    command becomes one line naming the file."""
    import reportgen.pipeline

    def fail(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "somewhere"))

    monkeypatch.setattr(reportgen.pipeline, "list_layers", fail)
    code, output = run("layers", *MODEL)
    assert code == 2
    assert_one_line_error(output, str(tmp_path / "somewhere"), "Permission denied")


def test_an_internal_error_is_one_line_exit_70_and_debug_shows_the_traceback(monkeypatch):
    import reportgen.pipeline

    def bug(*_args, **_kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(reportgen.pipeline, "list_layers", bug)
    code, output = run("layers", *MODEL)
    lines = output.strip().splitlines()
    assert code == 70 and len(lines) == 1 and "Traceback" not in output
    assert lines[0].startswith("internal error: ZeroDivisionError: division by zero") and "please report" in lines[0]
    with pytest.raises(ZeroDivisionError):
        run("--debug", "layers", *MODEL)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    from reportgen.store import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_more_classes_than_there_are_is_said(tmp_path):
    code, output = run(*BUILD[:-2], "--classes", "5000", "--no-site", "--out", str(tmp_path / "o"))
    assert code == 0, output
    assert "warning: --classes 5000: reportgen's list of ImageNet classes has 48; made 48" in output


def test_an_interrupted_build_names_the_folders_it_really_used(tmp_path, monkeypatch):
    """--out and --store from a config file, not report/.cache; a render keeps nothing, and says so."""
    import reportgen.pipeline

    (tmp_path / "c.toml").write_text(f'out = "{tmp_path / "elsewhere"}"\nstore = "{tmp_path / "shared"}"\n')

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reportgen.pipeline, "build", interrupted)
    code, output = run("build", *MODEL, "--config", str(tmp_path / "c.toml"))
    assert code == 130
    assert f"finished renders are kept in {tmp_path / 'shared'}" in output and "report/.cache" not in output
    monkeypatch.setattr(reportgen.pipeline, "render_unit", interrupted)
    code, output = run(*RENDER, "--out", str(tmp_path / "r.png"))
    assert code == 130 and f"{tmp_path / 'r.png'} was not written" in output and ".cache" not in output


def test_a_missing_ray_leaves_no_out(tmp_path, monkeypatch):
    import reportgen.executors
    from reportgen.errors import UsageError

    def no_ray(*_args, **_kwargs):
        raise UsageError("--executor ray needs Ray: pip install 'reportgen[ray]'")

    monkeypatch.setattr(reportgen.executors, "make_executor", no_ray)
    code, output = run(*BUILD[:-1], str(tmp_path / "out"), "--executor", "ray")
    assert code == 2
    assert_one_line_error(output, "needs Ray")
    assert not (tmp_path / "out").exists()


def test_serve_says_where_to_browse_and_when_it_stopped(tmp_path):
    import signal
    import socket
    import sys
    import time

    (tmp_path / "rep" / "docs").mkdir(parents=True)
    (tmp_path / "rep" / "mkdocs.yml").write_text("site_name: t\n")
    (tmp_path / "rep" / "docs" / "index.md").write_text("# hello\n")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "reportgen", "serve", "--out", str(tmp_path / "rep"), "--address",
                               f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = server.stderr.readline()  # blocks until the server says something (the suite's timeout bounds it)
        assert first.strip() == f"serving {tmp_path / 'rep'} on http://127.0.0.1:{port}/ (Ctrl-C stops)"
        time.sleep(0.5)
        server.send_signal(signal.SIGINT)
        rest = server.communicate(timeout=30)[1]
    finally:
        server.kill()
    assert rest.strip().splitlines()[-1] == "stopped" and "Traceback" not in rest


def test_a_canvas_out_of_memory_is_not_called_too_small(tmp_path, monkeypatch):
    """Running out of memory at the canvas size says so, and is not taken for a size the model
    refuses (which once said "--size ... is too small")."""
    import reportgen.models

    def no_memory(_loaded, height, width):
        return f"DefaultCPUAllocator: can't allocate memory: you tried to allocate {height * width * 12} bytes"

    monkeypatch.setattr(reportgen.models, "forward_error", no_memory)
    code, output = run(*BUILD[:-1], str(tmp_path / "out"), "--size", "4000")
    assert code == 2
    assert_one_line_error(output, "--size 4000", "more memory than cpu has", "smaller --size")
    assert "too small" not in output and not (tmp_path / "out").exists()


def test_what_counts_as_out_of_memory():
    from types import SimpleNamespace

    from reportgen.models import forward_error, out_of_memory

    def exhausted(_x):
        raise MemoryError()

    error = forward_error(SimpleNamespace(module=exhausted, device="cpu"), 8, 8)
    assert error is not None and out_of_memory(error)
    assert out_of_memory("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)")
    assert out_of_memory("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                         "you tried to allocate 120068669952 bytes.")
    assert not out_of_memory("Input height (152) doesn't match model (224).")
    assert not out_of_memory("Given input size: (512x4x4). Calculated output size: (512x0x0). Output size is too small")


def test_a_late_mistake_leaves_a_folder_the_user_made(tmp_path, monkeypatch):
    """A build that fails after making --out removes it (the table above); one the user made stays."""
    monkeypatch.chdir(tmp_path)
    folder_with_a_1px_image(tmp_path)
    (tmp_path / "out").mkdir()
    code, output = run(*BUILD, "--images", "imgs")
    assert code == 2 and "too small" in output
    assert (tmp_path / "out").is_dir()
