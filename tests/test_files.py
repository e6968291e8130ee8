"""attnx.files: outputs land whole or not at all; bad output paths are refused up front; the folder lock."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attnx.errors import InputError, OutputWriteError
from attnx.files import (atomic_output, atomic_outputs, check_output_folder, check_output_path, folder_lock,
                         write_text)

OLD = b"the previous, valid contents\n"


def _child(source: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(source), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_write_lands_whole_and_leaves_no_staging(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(OLD)
    with atomic_output(target) as staged:
        assert staged.parent.parent == tmp_path and staged.name == "out.json" and staged != target
        staged.write_text("new")
        assert target.read_bytes() == OLD  # nothing lands before the block ends
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


@pytest.mark.parametrize("failure", [RuntimeError("the writer broke"), KeyboardInterrupt()], ids=type)
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "model.onnx"
    target.write_bytes(OLD)
    with pytest.raises(type(failure)):
        with atomic_output(target) as staged:
            staged.write_bytes(b"\x08half a protobuf")
            raise failure
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_folders_made_for_a_failed_output_are_removed(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a" / "b" / "x.onnx") as staged:
            staged.write_bytes(b"partial")
            raise RuntimeError("failed")
    assert os.listdir(tmp_path) == []


def test_several_outputs_land_all_or_none(tmp_path):
    prefill, decode = tmp_path / "m.prefill.onnx", tmp_path / "m.decode.onnx"
    prefill.write_bytes(OLD)
    with pytest.raises(RuntimeError):
        with atomic_outputs(prefill, decode) as (p, d):
            p.write_bytes(b"new prefill")
            raise RuntimeError("decode export failed")
    assert prefill.read_bytes() == OLD and not decode.exists()
    with atomic_outputs(prefill, decode) as (p, d):
        p.write_bytes(b"new prefill")
        d.write_bytes(b"new decode")
    assert prefill.read_bytes() == b"new prefill" and decode.read_bytes() == b"new decode"
    assert sorted(os.listdir(tmp_path)) == ["m.decode.onnx", "m.prefill.onnx"]


def test_a_rename_that_fails_puts_back_the_outputs_already_landed(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(OLD)
    with pytest.raises(OSError):
        with atomic_outputs(first, second) as (a, b):
            a.write_bytes(b"new a")
            b.write_bytes(b"new b")
            second.mkdir()  # appears after the up-front checks: the rename onto it fails
            (second / "keep").write_bytes(b"")
    assert first.read_bytes() == OLD and second.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "b.onnx"]


def test_a_writer_that_writes_nothing_is_an_error_and_lands_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="finished without writing it"):
        with atomic_outputs(tmp_path / "a", tmp_path / "b") as (a, _):
            a.write_bytes(b"only one")
    assert os.listdir(tmp_path) == []


def test_onnx_external_data_lands_beside_its_model(tmp_path):
    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])], [weight])
    target = tmp_path / "m.onnx"
    with atomic_output(target) as staged:
        onnx.save(helper.make_model(graph), staged, save_as_external_data=True, location="m.onnx.data")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    loaded = onnx.load(target)
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), np.arange(4096, dtype=np.float32))


def test_the_same_path_twice_is_refused(tmp_path):
    with pytest.raises(InputError, match="expected a different path for each output"):
        with atomic_outputs(tmp_path / "r.json", tmp_path / "." / "r.json"):
            pass


def test_a_full_disk_is_a_clear_error_naming_the_output(tmp_path):
    target = tmp_path / "r.json"
    target.write_bytes(OLD)
    with pytest.raises(OutputWriteError, match=r"expected to write .*r\.json, but the system refused: "
                                               r"No space left on device; what was at those paths is left"):
        with atomic_output(target):
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == OLD and os.listdir(tmp_path) == ["r.json"]


def test_a_folder_that_takes_no_new_file_is_a_clear_error_before_the_writer_runs(tmp_path, monkeypatch):
    """A folder that passes the up-front check but refuses the staging folder (as /proc does, with ENOENT
    for root) is exit 2's OutputWriteError, not an internal error, and the writer never runs."""
    target = tmp_path / "r.json"
    target.write_bytes(OLD)

    def refuse(prefix, dir):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr("attnx.files.tempfile.mkdtemp", refuse)
    ran = []
    with pytest.raises(OutputWriteError, match=r"expected to write .*r\.json, but .* takes no new file: "
                                               r"No such file or directory"):
        with atomic_output(target):
            ran.append(True)
    assert not ran and target.read_bytes() == OLD and os.listdir(tmp_path) == ["r.json"]


def test_write_text_writes_utf8(tmp_path):
    write_text(tmp_path / "r.json", "→ ✓\n")
    assert (tmp_path / "r.json").read_bytes() == "→ ✓\n".encode()


def test_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match=r"-o .*folder: expected a file to write, found a folder"):
        check_output_path(tmp_path / "folder", "-o")
    with pytest.raises(InputError, match=r"--json .*x\.json: expected an existing folder .*missing.*, "
                                         r"found nothing there"):
        check_output_path(tmp_path / "missing" / "dir" / "x.json", "--json")
    with pytest.raises(InputError, match=r"expected .*file to be a folder, found a file"):
        check_output_path(tmp_path / "file" / "x.onnx", "-o", make_parents=True)
    with pytest.raises(InputError, match="expected a folder, found a file"):
        check_output_folder(tmp_path / "file", "--out")
    assert check_output_path(tmp_path / "new" / "x.onnx", make_parents=True) == tmp_path / "new" / "x.onnx"
    assert not (tmp_path / "new").exists()  # checked, not created: nothing is left if the work fails
    with pytest.raises(InputError, match="expected a file to write, found a special file"):
        check_output_path("/dev/null")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(InputError, match="expected a folder attnx can write to, found .*ro read-only"):
        check_output_path(folder / "x.onnx")


def test_sigterm_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(OLD)
    child = _child("""
        import sys, time
        from attnx.files import atomic_output
        with atomic_output(sys.argv[1]) as staged:
            with open(staged, "wb") as f:
                f.write(b"x" * 2_000_000)
                print("writing", flush=True)
                time.sleep(60)
        """, str(target))
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err  # unwound, not killed on the spot
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_a_second_holder_of_the_folder_lock_says_it_waits(tmp_path):
    child = _child("""
        import sys, time
        from attnx.files import folder_lock
        with folder_lock(sys.argv[1], print):
            print("locked", flush=True)
            time.sleep(1.5)
        """, str(tmp_path))
    try:
        assert child.stdout.readline().strip() == "locked"
        said = []
        start = time.monotonic()
        with folder_lock(tmp_path, said.append):
            waited = time.monotonic() - start
        child.communicate(timeout=30)
    finally:
        child.kill()
    assert said == [f"waiting for another attnx process that is writing into {tmp_path} to finish"]
    assert waited > 0.5
    said.clear()
    with folder_lock(tmp_path, said.append):  # free again: no word
        pass
    assert said == [] and os.listdir(tmp_path) == []
