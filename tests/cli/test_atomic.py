"""Every file the commands write lands whole or not at all, and a bad output path fails before the work.

Interrupted and size-limited runs are real processes (`python -m attnx.cli`), bounded in time.
"""

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import onnx
import pytest

from attnx.cli.main import main

OLD = b"the previous, valid file\n"
TIMEOUT_S = 300


def _attnx(*args, preexec_fn=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "attnx.cli", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, preexec_fn=preexec_fn, cwd=cwd)


def _python(source: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(source), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _error_line(err: str) -> str:
    """The one line that says what went wrong, and that no traceback came with it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line or ": internal error " in line
             or line.endswith(": interrupted")]
    assert len(lines) == 1, err
    return lines[0]


def test_optimize_report_into_a_missing_folder_fails_before_writing_the_onnx(tmp_path, exported, capsys):
    _, src = exported("linear-tiny")
    out, report = tmp_path / "out.onnx", tmp_path / "missing" / "dir" / "r.json"
    assert main(["optimize", str(src), "-o", str(out), "--report", str(report)]) == 2
    assert f"--report {report}: expected an existing folder {report.parent}, found nothing there" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_optimize_output_onto_a_folder_is_refused(tmp_path, exported, capsys):
    _, src = exported("linear-tiny")
    assert main(["optimize", str(src), "-o", str(tmp_path)]) == 2
    assert f"-o {tmp_path}: expected a file to write, found a folder" in capsys.readouterr().err


def test_optimize_lands_the_onnx_and_its_report_together(tmp_path, exported, monkeypatch, capsys):
    _, src = exported("linear-tiny")
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    out.write_bytes(OLD)

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("json.dumps", no_room)  # the report's write fails after the .onnx is written
    assert main(["optimize", str(src), "-o", str(out), "--report", str(report)]) == 2
    assert "No space left on device; what was at those paths is left as it was" in capsys.readouterr().err
    assert out.read_bytes() == OLD and sorted(os.listdir(tmp_path)) == ["out.onnx"]


def test_check_json_into_a_missing_folder_fails_up_front(tmp_path, exported, capsys):
    _, path = exported("linear-tiny")
    report = tmp_path / "missing" / "dir" / "x.json"
    assert main(["check", str(path), "--model", "linear-tiny", "--json", str(report)]) == 2
    out, err = capsys.readouterr()
    assert "PASSED" not in out and "FAILED" not in out
    assert f"--json {report}: expected an existing folder" in err
    assert main(["check", "--mode", "stream", "--model", "linear-tiny", "--json", str(report)]) == 2
    assert "PASSED" not in capsys.readouterr().out and not (tmp_path / "missing").exists()


def test_export_onto_a_folder_or_under_a_file_is_refused_before_the_export(tmp_path, capsys):
    (tmp_path / "file").write_bytes(OLD)
    start = time.monotonic()
    assert main(["export", "linear-tiny", "-o", str(tmp_path)]) == 2
    assert "expected a file to write, found a folder" in capsys.readouterr().err
    assert main(["export", "linear-tiny", "-o", str(tmp_path / "file" / "m.onnx"), "--mode", "both"]) == 2
    assert f"expected {tmp_path / 'file'} to be a folder, found a file" in capsys.readouterr().err
    assert time.monotonic() - start < 5  # refused before torch.export ran
    assert os.listdir(tmp_path) == ["file"] and (tmp_path / "file").read_bytes() == OLD


def test_export_mode_both_lands_both_graphs_or_neither(tmp_path, monkeypatch, capsys):
    prefill, decode = tmp_path / "m.prefill.onnx", tmp_path / "m.decode.onnx"
    prefill.write_bytes(OLD)
    decode.write_bytes(OLD)
    save, calls = onnx.save, []

    def second_fails(proto, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.EFBIG, "File too large")
        save(proto, path, *args, **kwargs)

    monkeypatch.setattr(onnx, "save", second_fails)
    assert main(["export", "linear-tiny", "-o", str(tmp_path / "m.onnx"), "--mode", "both"]) == 2
    assert "File too large" in capsys.readouterr().err
    assert len(calls) == 2 and prefill.read_bytes() == OLD and decode.read_bytes() == OLD
    assert sorted(os.listdir(tmp_path)) == ["m.decode.onnx", "m.prefill.onnx"]
    monkeypatch.setattr(onnx, "save", save)
    assert main(["export", "linear-tiny", "-o", str(tmp_path / "m.onnx"), "--mode", "both"]) == 0
    assert [onnx.load(p).metadata_props for p in (prefill, decode)]  # both whole ONNX files now
    assert sorted(os.listdir(tmp_path)) == ["m.decode.onnx", "m.prefill.onnx"]


def test_a_file_size_limit_fails_the_export_clearly_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(OLD)
    limit = 64 * 1024  # linear-tiny's file is ~480 KB

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _attnx("export", "linear-tiny", "-o", str(out), preexec_fn=limit_file_size)
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc.stderr)
    assert line.startswith("attnx export: error: expected to write ") and "File too large" in line
    assert out.read_bytes() == OLD and os.listdir(tmp_path) == ["m.onnx"]


def test_sigterm_while_the_export_is_written_leaves_the_old_file_and_no_partial_one(tmp_path):
    """onnx.save made slow once it has written the staged file: SIGTERM then lands nothing."""
    out = tmp_path / "m.onnx"
    out.write_bytes(OLD)
    child = _python("""
        import sys, time
        import onnx
        save = onnx.save
        def slow(*args, **kwargs):
            save(*args, **kwargs)
            print("written", flush=True)
            time.sleep(60)
        onnx.save = slow
        from attnx.cli.main import main
        sys.exit(main(["export", "linear-tiny", "-o", sys.argv[1]]))
        """, str(out))
    try:
        assert child.stdout.readline().strip() == "written"
        assert any(n.startswith(".attnx-staging-") for n in os.listdir(tmp_path))  # the write is under way
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert _error_line(err) == "attnx export: interrupted"
    assert out.read_bytes() == OLD and os.listdir(tmp_path) == ["m.onnx"]


def test_sigterm_during_the_export_leaves_the_old_file(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(OLD)
    child = subprocess.Popen([sys.executable, "-m", "attnx.cli", "export", "linear-tiny", "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr.readline().startswith("[1/1] export linear-tiny")  # torch.export is running
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode in (130, -signal.SIGTERM)
    assert out.read_bytes() == OLD and os.listdir(tmp_path) == ["m.onnx"]


def test_convert_into_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "out").write_bytes(OLD)
    assert main(["convert", "-o", str(tmp_path / "out")]) == 2
    assert f"-o {tmp_path / 'out'}: expected a folder, found a file" in capsys.readouterr().err


def test_plugins_build_out_on_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "lib").write_bytes(OLD)
    assert main(["plugins", "build", "--out", str(tmp_path / "lib")]) == 2
    assert "plugin build folder" in capsys.readouterr().err and (tmp_path / "lib").read_bytes() == OLD


FAKE_BUILD = """
    import sys, time
    from pathlib import Path
    from attnx.plugins import build

    def fake_run(cmd, log, what, heartbeat_s=15.0):
        # configure: say so; build: once the file argv[3] exists, link into CMAKE_LIBRARY_OUTPUT_DIRECTORY
        if what == "cmake configure":
            log("[attnx] $ cmake (fake)")
            return
        deadline = time.monotonic() + 120
        while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        link = Path(sys.argv[1]) / build.LINK_DIR
        link.mkdir(exist_ok=True)
        (link / build.LIBRARY_NAME).write_text(sys.argv[2])

    build._run = fake_run
    build.find_cmake = lambda: "cmake"
    build.find_nvcc = lambda: "nvcc"
    build.headers.include_dir = lambda log: "/nonexistent/include"
    from attnx.cli.main import main
    sys.exit(main(["plugins", "build", "--out", sys.argv[1], "--arch", "90"]))
    """


def test_two_plugin_builds_into_one_folder_take_turns_and_say_so(tmp_path):
    """CMake and nvcc faked (the lock and the landing are what is tested): the second build waits."""
    out, go = tmp_path / "build", tmp_path / "go"
    first = _python(FAKE_BUILD, str(out), "first", str(go))
    second = None
    try:
        while "$ cmake (fake)" not in first.stderr.readline():  # the first holds the lock
            assert first.poll() is None
        second = _python(FAKE_BUILD, str(out), "second", str(go))
        said = [second.stderr.readline(), second.stderr.readline()]  # what it builds, then that it waits
        assert said[1] == f"[attnx] waiting for another attnx process that is writing into {out} to finish\n", said
        go.write_bytes(b"")
        out1, err1 = first.communicate(timeout=TIMEOUT_S)
        out2, err2 = second.communicate(timeout=TIMEOUT_S)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert "waiting" not in err1 + err2  # said once, by the second only
    lib = out / "libattnx_plugins.so"
    assert out1.strip() == out2.strip() == str(lib)
    assert lib.read_text() == "second"  # the second build ran after the first, not beside it
    assert not [n for n in os.listdir(out) if n.startswith(".attnx-staging-")]
