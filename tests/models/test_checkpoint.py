"""Tests for the torch-free, restricted-unpickling checkpoint reader."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synctalk_fast.models import checkpoint

CheckpointError = checkpoint.CheckpointError
load_state_dict = checkpoint.load_state_dict


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _as_numpy(t: Any) -> np.ndarray:
    torch = _torch()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.detach().contiguous().numpy()


def _assert_matches_torch(got: dict[str, np.ndarray], ref: dict[str, Any]) -> None:
    torch = _torch()
    tensors = {k: v for k, v in ref.items() if isinstance(v, torch.Tensor)}
    assert list(got) == list(tensors)
    for key, tensor in tensors.items():
        want = _as_numpy(tensor)
        arr = got[key]
        assert isinstance(arr, np.ndarray), key
        assert arr.dtype == want.dtype, (key, arr.dtype, want.dtype)
        assert arr.shape == want.shape, (key, arr.shape, want.shape)
        np.testing.assert_array_equal(arr, want, err_msg=key)
        assert arr.flags.c_contiguous and arr.flags.writeable and arr.flags.owndata, key


def _rich_state_dict() -> OrderedDict[str, Any]:
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd: OrderedDict[str, Any] = OrderedDict()
    sd["conv.weight"] = torch.randn(8, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(8, generator=g)
    sd["bn.weight"] = torch.rand(8, generator=g)
    sd["bn.bias"] = torch.randn(8, generator=g)
    sd["bn.running_mean"] = torch.randn(8, generator=g)
    sd["bn.running_var"] = torch.rand(8, generator=g) + 0.5
    sd["bn.num_batches_tracked"] = torch.tensor(0)  # int64, 0-d
    sd["half"] = torch.randn(5, 7, generator=g).half()
    sd["bf16"] = torch.randn(6, generator=g).bfloat16()
    sd["transposed"] = torch.randn(5, 3, generator=g).t()  # non-contiguous
    sd["shared_row"] = base[1]  # views of one storage, offset 6
    sd["shared_col"] = base[:, 2]  # stride 6
    sd["shared_all"] = base
    sd["f64"] = torch.randn(2, 2, generator=g, dtype=torch.float64)
    sd["i32"] = torch.arange(-3, 3, dtype=torch.int32)
    sd["i16"] = torch.tensor([-2, 7], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 4)
    return sd


# ---- hand-made pickles ---------------------------------------------------


class G:
    """A GLOBAL opcode naming module.name."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class R:
    """REDUCE: call ``fn(*args)``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args


class Pid:
    """BINPERSID with the given tuple."""

    def __init__(self, *fields: Any) -> None:
        self.fields = fields


class Build:
    """BUILD: set ``state`` on ``obj``."""

    def __init__(self, obj: Any, state: Any) -> None:
        self.obj, self.state = obj, state


def _enc(x: Any) -> bytes:
    if isinstance(x, G):
        return b"c" + x.module.encode() + b"\n" + x.name.encode() + b"\n"
    if isinstance(x, R):
        return _enc(x.fn) + _enc(tuple(x.args)) + b"R"
    if isinstance(x, Pid):
        return _enc(tuple(x.fields)) + b"Q"
    if isinstance(x, Build):
        return _enc(x.obj) + _enc(x.state) + b"b"
    if x is None:
        return b"N"
    if x is True:
        return b"\x88"
    if x is False:
        return b"\x89"
    if isinstance(x, int):
        return b"J" + struct.pack("<i", x)
    if isinstance(x, str):
        data = x.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(x, tuple):
        return b"(" + b"".join(_enc(v) for v in x) + b"t"
    if isinstance(x, list):
        return b"](" + b"".join(_enc(v) for v in x) + b"e"
    if isinstance(x, dict):
        return b"}(" + b"".join(_enc(k) + _enc(v) for k, v in x.items()) + b"u"
    raise TypeError(type(x))


def _pickle(x: Any) -> bytes:
    return b"\x80\x02" + _enc(x) + b"."


def _tensor(key: str, numel: int, size: tuple, stride: tuple, offset: int = 0) -> R:
    storage = Pid("storage", G("torch", "FloatStorage"), key, "cpu", numel)
    return R(
        G("torch._utils", "_rebuild_tensor_v2"),
        storage,
        offset,
        size,
        stride,
        False,
        R(G("collections", "OrderedDict")),
    )


def _write_torch_zip(
    path: Path,
    data_pkl: bytes,
    storages: dict[str, bytes] | None = None,
    byteorder: bytes | None = b"little",
    folder: str = "archive",
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{folder}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{folder}/byteorder", byteorder)
        for key, data in (storages or {}).items():
            zf.writestr(f"{folder}/data/{key}", data)
        zf.writestr(f"{folder}/version", b"3\n")
    return path


class _Payload:
    """Pickles as ``fn(*args)``: executes on an unrestricted pickle.load."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(canary: Path) -> list[tuple[object, str]]:
    return [
        (_Payload(os.system, f"touch {canary}"), f"{os.system.__module__}.system"),
        (_Payload(eval, f"open({str(canary)!r}, 'w').close()"), "builtins.eval"),
        (_Payload(subprocess.Popen, ["touch", str(canary)]), "subprocess.Popen"),
    ]


# --------------------------------------------------------------------------
# 1. zip format, values/dtypes/shapes equal torch.load
# --------------------------------------------------------------------------


def test_zip_state_dict_matches_torch_load(tmp_path: Path) -> None:
    torch = _torch()
    sd = _rich_state_dict()
    path = tmp_path / "rich.pth"
    torch.save(sd, path)
    with zipfile.ZipFile(path) as zf:  # guard: really the zip format
        assert any(n.endswith("/data.pkl") for n in zf.namelist())

    got = load_state_dict(path)
    _assert_matches_torch(got, torch.load(path))

    assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"].dtype == np.int64
    assert got["half"].dtype == np.float16
    assert got["bf16"].dtype == np.float32
    np.testing.assert_array_equal(got["shared_row"], np.arange(6, 12, dtype=np.float32))
    np.testing.assert_array_equal(got["shared_col"], np.arange(2, 24, 6, dtype=np.float32))
    assert got["empty"].shape == (0, 4)


def test_shared_storage_views_are_independent_copies(tmp_path: Path) -> None:
    torch = _torch()
    base = torch.arange(12.0).reshape(3, 4)
    path = tmp_path / "shared.pth"
    torch.save({"a": base, "b": base[1:, 1:], "same": base}, path)
    got = load_state_dict(path)
    got["a"][:] = -1
    np.testing.assert_array_equal(got["b"], base[1:, 1:].numpy())
    np.testing.assert_array_equal(got["same"], base.numpy())


def test_path_accepts_str_and_pathlike(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "x.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert load_state_dict(str(path)).keys() == load_state_dict(path).keys() == {"w"}


# --------------------------------------------------------------------------
# 2. wrappers and prefixes
# --------------------------------------------------------------------------


def test_wrapped_checkpoints_are_unwrapped(tmp_path: Path) -> None:
    torch = _torch()
    sd = OrderedDict(w=torch.randn(3, 2), b=torch.randn(3))
    cases = {
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model_net": {"model": {"net": sd}},
        "model_state_dict": {"model_state_dict": sd, "optimizer_state_dict": {"lr": 0.1}},
    }
    for name, obj in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        got = load_state_dict(path)
        assert list(got) == ["w", "b"], name
        for k in sd:
            np.testing.assert_array_equal(got[k], sd[k].numpy())


def test_metadata_entries_are_dropped(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "meta.pth"
    torch.save(
        {
            "w": torch.ones(2),
            "epoch": 7,
            "name": "x",
            "shape": torch.Size([2]),
            "dtype": torch.float16,
            "hist": [1.0, 2.0],
            "w2": torch.zeros(1),
        },
        path,
    )
    assert list(load_state_dict(path)) == ["w", "w2"]


def test_checkpoint_with_optimizer_state(tmp_path: Path) -> None:
    torch = _torch()
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = tmp_path / "train.pth"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}, path)
    got = load_state_dict(path)
    assert set(got) == {"weight", "bias"}
    np.testing.assert_array_equal(got["weight"], model.weight.detach().numpy())


def test_prefixes_are_stripped_repeatedly(tmp_path: Path) -> None:
    torch = _torch()
    sd = OrderedDict()
    sd["module.audio_encoder.0.conv_block.0.weight"] = torch.randn(2, 1, 3)
    sd["module.fc.bias"] = torch.randn(2)
    sd["audio_encoder.1.weight"] = torch.randn(2)
    sd["plain"] = torch.randn(1)
    path = tmp_path / "prefixed.pth"
    torch.save(sd, path)
    got = load_state_dict(path)
    assert list(got) == ["0.conv_block.0.weight", "fc.bias", "1.weight", "plain"]
    np.testing.assert_array_equal(
        got["0.conv_block.0.weight"], sd["module.audio_encoder.0.conv_block.0.weight"].numpy()
    )

    assert list(load_state_dict(path, prefixes=())) == list(sd)
    assert list(load_state_dict(path, prefixes="module.")) == [
        "audio_encoder.0.conv_block.0.weight",
        "fc.bias",
        "audio_encoder.1.weight",
        "plain",
    ]
    with pytest.raises(ValueError):
        load_state_dict(path, prefixes=("",))


def test_prefix_collision_raises(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "collide.pth"
    torch.save({"module.w": torch.ones(1), "w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="'module.w' and 'w' both become 'w'"):
        load_state_dict(path)
    assert list(load_state_dict(path, prefixes=())) == ["module.w", "w"]


# --------------------------------------------------------------------------
# 3. a real nn.Module
# --------------------------------------------------------------------------


def test_real_module_state_dict(tmp_path: Path) -> None:
    torch = _torch()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.train()
    model(torch.randn(2, 3, 8, 8))  # move running stats off their defaults
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    got = load_state_dict(path)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_array_equal(got[k], want[k])
    assert int(got["1.num_batches_tracked"]) == 1


def test_parameters_saved_as_parameters(tmp_path: Path) -> None:
    torch = _torch()
    model = torch.nn.Linear(2, 3)
    model.weight.tag = "with state"  # forces _rebuild_parameter_with_state
    path = tmp_path / "params.pth"
    torch.save(model.state_dict(keep_vars=True), path)
    got = load_state_dict(path)
    np.testing.assert_array_equal(got["weight"], model.weight.detach().numpy())
    np.testing.assert_array_equal(got["bias"], model.bias.detach().numpy())


# --------------------------------------------------------------------------
# 4. refusal of code-executing pickles, with a side-effect canary
# --------------------------------------------------------------------------


def test_canary_payload_really_executes_when_unrestricted(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload, _ = _payloads(canary)[0]
    pickle.loads(pickle.dumps(payload, protocol=2))  # the unsafe baseline
    assert canary.exists()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_malicious_zip_checkpoint_is_refused(tmp_path: Path, index: int) -> None:
    canary = tmp_path / "canary"
    payload, global_name = _payloads(canary)[index]
    data = pickle.dumps({"w": payload}, protocol=2)
    path = _write_torch_zip(tmp_path / "evil.pth", data)
    with pytest.raises(CheckpointError, match=f"refusing to load global '{global_name}'"):
        load_state_dict(path)
    assert not canary.exists()


def test_handmade_os_system_global_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = _pickle({"w": R(G("os", "system"), f"touch {canary}")})
    path = _write_torch_zip(tmp_path / "evil.pth", data)
    with pytest.raises(CheckpointError, match="refusing to load global 'os.system'"):
        load_state_dict(path)
    assert not canary.exists()


def test_payload_inside_real_checkpoint_is_refused(tmp_path: Path) -> None:
    torch = _torch()
    canary = tmp_path / "canary"
    path = tmp_path / "trojan.pth"
    torch.save({"w": torch.ones(2), "hook": _Payload(os.system, f"touch {canary}")}, path)
    with pytest.raises(CheckpointError, match="refusing to load global"):
        load_state_dict(path)
    assert not canary.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_plain_pickle_payload_is_refused(tmp_path: Path, protocol: int) -> None:
    canary = tmp_path / "canary"
    for payload, global_name in _payloads(canary):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
        with pytest.raises(CheckpointError, match=f"refusing to load global '{global_name}'"):
            load_state_dict(path)
        assert not canary.exists()


def test_legacy_format_payload_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "evil_legacy.pth"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        pickle.dump({"w": _Payload(os.system, f"touch {canary}")}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load global"):
        load_state_dict(path)
    assert not canary.exists()


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match=r"refusing to load global 'torch\.nn\.modules"):
        load_state_dict(path)


def test_build_on_stand_in_is_refused(tmp_path: Path) -> None:
    torch = _torch()
    # Try to overwrite the shared FloatStorage stand-in's itemsize.
    data = _pickle({"w": _tensor("0", 2, (2,), (1,)), "x": Build(G("torch", "FloatStorage"), (None, {"itemsize": 1}))})
    path = _write_torch_zip(tmp_path / "build.pth", data, {"0": np.ones(2, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match="refusing to"):
        load_state_dict(path)
    # Stand-ins are untouched: a genuine checkpoint still loads correctly.
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0)}, good)
    np.testing.assert_array_equal(load_state_dict(good)["w"], [0.0, 1.0, 2.0])


def test_out_of_bounds_view_is_refused(tmp_path: Path) -> None:
    storages = {"0": np.arange(4, dtype="<f4").tobytes()}
    for size, stride, offset in [((10,), (1,), 0), ((2, 2), (2, 1), 1), ((3,), (2,), 0)]:
        data = _pickle({"w": _tensor("0", 4, size, stride, offset)})
        path = _write_torch_zip(tmp_path / "oob.pth", data, storages)
        with pytest.raises(CheckpointError, match="exceeds storage"):
            load_state_dict(path)
    data = _pickle({"w": _tensor("0", 4, (2,), (-1,), 3)})
    path = _write_torch_zip(tmp_path / "neg.pth", data, storages)
    with pytest.raises(CheckpointError, match="negative"):
        load_state_dict(path)
    # The in-bounds extreme is accepted.
    data = _pickle({"w": _tensor("0", 4, (2, 2), (2, 1), 0)})
    path = _write_torch_zip(tmp_path / "ok.pth", data, storages)
    np.testing.assert_array_equal(load_state_dict(path)["w"], [[0, 1], [2, 3]])


def test_storage_size_mismatch_and_missing_record(tmp_path: Path) -> None:
    data = _pickle({"w": _tensor("0", 4, (4,), (1,))})
    path = _write_torch_zip(tmp_path / "short.pth", data, {"0": b"\0" * 12})
    with pytest.raises(CheckpointError, match="holds 12 bytes"):
        load_state_dict(path)
    path = _write_torch_zip(tmp_path / "missing.pth", data, {})
    with pytest.raises(CheckpointError, match="is missing"):
        load_state_dict(path)


def test_expansion_bomb_is_refused(tmp_path: Path) -> None:
    # A one-element storage viewed with stride 0 as 2**40 elements.
    data = _pickle({"w": _tensor("0", 1, (1 << 20, 1 << 20), (0, 0))})
    path = _write_torch_zip(tmp_path / "bomb.pth", data, {"0": b"\0" * 4})
    with pytest.raises(CheckpointError, match="refusing"):
        load_state_dict(path)


def test_self_referencing_wrapper_is_refused(tmp_path: Path) -> None:
    # d = {}; d["model"] = d
    data = b"\x80\x02}q\x00X\x05\x00\x00\x00modelh\x00s."
    path = _write_torch_zip(tmp_path / "cycle.pth", data)
    with pytest.raises(CheckpointError, match="cycle"):
        load_state_dict(path)


# --------------------------------------------------------------------------
# 5. not a checkpoint
# --------------------------------------------------------------------------


def test_not_a_checkpoint(tmp_path: Path) -> None:
    cases = {
        "random.pth": (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        "empty.pth": (b"", "empty file"),
        "text.pth": (b"hello world\n", "not a PyTorch checkpoint"),
        "int.pkl": (pickle.dumps(42), "not a PyTorch checkpoint"),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=pattern):
            load_state_dict(path)

    nopkl = tmp_path / "nopkl.pth"
    with zipfile.ZipFile(nopkl, "w") as zf:
        zf.writestr("archive/data/0", b"\0" * 8)
    with pytest.raises(CheckpointError, match="without a data.pkl"):
        load_state_dict(nopkl)

    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "does_not_exist.pth")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path)  # a directory


def test_truncated_zip(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "full.pth"
    torch.save({"w": torch.randn(1000)}, path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        load_state_dict(cut)


def test_no_tensors_and_wrong_top_level(tmp_path: Path) -> None:
    torch = _torch()
    cases = {
        "meta_only.pth": ({"epoch": 3, "lr": 0.1}, "no tensors"),
        "list.pth": ([torch.ones(2)], "holds a list"),
        "tensor.pth": (torch.ones(2), "single tensor"),
        "nested.pth": ({"gen": {"w": torch.ones(1)}}, "no tensors"),
    }
    for name, (obj, pattern) in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=pattern):
            load_state_dict(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_state_dict(path)


# --------------------------------------------------------------------------
# 6. legacy (non-zip) format
# --------------------------------------------------------------------------


def test_legacy_format_matches_torch_load(tmp_path: Path) -> None:
    torch = _torch()
    sd = _rich_state_dict()
    path = tmp_path / "legacy.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    _assert_matches_torch(load_state_dict(path), torch.load(path))

    wrapped = tmp_path / "legacy_wrapped.pth"
    torch.save({"state_dict": sd, "epoch": 2}, wrapped, _use_new_zipfile_serialization=False)
    _assert_matches_torch(load_state_dict(wrapped), torch.load(wrapped)["state_dict"])


def _write_legacy(path: Path, obj: Any, storages: list[tuple[str, bytes, int]]) -> Path:
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        f.write(_pickle(obj))
        f.write(pickle.dumps([key for key, _, _ in storages], protocol=2))
        for _, data, numel in storages:
            f.write(struct.pack("<q", numel) + data)
    return path


def test_handmade_legacy_file_with_storage_view(tmp_path: Path) -> None:
    # Pre-1.0 files could pickle storage views: ("storage", type, root, loc, numel, view).
    od = R(G("collections", "OrderedDict"))
    rebuild = G("torch._utils", "_rebuild_tensor_v2")
    root = Pid("storage", G("torch", "DoubleStorage"), "r", "cuda:0", 6, None)
    view = Pid("storage", G("torch", "DoubleStorage"), "r", "cuda:0", 6, ("v", 2, 3))
    obj = {
        "whole": R(rebuild, root, 0, (2, 3), (3, 1), False, od),
        "view": R(rebuild, view, 1, (2,), (1,), False, od),
        "old": R(G("torch._utils", "_rebuild_tensor"), root, 4, (2,), (1,)),
    }
    values = np.arange(6, dtype="<f8") * 1.5
    path = _write_legacy(tmp_path / "views.pth", obj, [("r", values.tobytes(), 6)])
    got = load_state_dict(path)
    np.testing.assert_array_equal(got["whole"], values.reshape(2, 3))
    np.testing.assert_array_equal(got["view"], values[3:5])
    np.testing.assert_array_equal(got["old"], values[4:6])
    assert got["view"].dtype == np.float64

    bad = _write_legacy(tmp_path / "bad.pth", obj, [("r", values.tobytes(), 5)])
    with pytest.raises(CheckpointError, match="holds 5 elements"):
        load_state_dict(bad)


def test_legacy_truncated(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.randn(100)}, path, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(cut)


# --------------------------------------------------------------------------
# 7. big-endian byteorder record
# --------------------------------------------------------------------------


def _to_big_endian(src: Path, dst: Path, itemsize: int) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and not info.filename.endswith(".pkl"):
                data = np.frombuffer(data, np.uint8).reshape(-1, itemsize)[:, ::-1].tobytes()
            zout.writestr(info.filename, data)


@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16", "bfloat16", "int64", "int16"])
def test_big_endian_byteorder(tmp_path: Path, dtype_name: str) -> None:
    torch = _torch()
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(1)
    base = (torch.randn(4, 5, generator=g) * 100).to(dtype)
    sd = {"a": base, "b": base.t(), "c": (torch.arange(7) - 3).to(dtype)}
    little = tmp_path / "little.pth"
    torch.save(sd, little)
    big = tmp_path / "big.pth"
    _to_big_endian(little, big, base.element_size())

    ref = torch.load(big)  # torch itself byte-swaps: the rewrite is faithful
    for k in sd:
        assert torch.equal(ref[k], sd[k])
    got = load_state_dict(big)
    _assert_matches_torch(got, sd)
    assert all(a.dtype.isnative for a in got.values())


def test_missing_byteorder_means_little(tmp_path: Path) -> None:
    data = _pickle({"w": _tensor("0", 3, (3,), (1,))})
    path = _write_torch_zip(
        tmp_path / "nobo.pth",
        data,
        {"0": np.array([1, 2, 3], "<f4").tobytes()},
        byteorder=None,
        folder="some_other_name",
    )
    np.testing.assert_array_equal(load_state_dict(path)["w"], [1, 2, 3])
    bad = _write_torch_zip(tmp_path / "badbo.pth", data, {"0": b"\0" * 12}, byteorder=b"middle")
    with pytest.raises(CheckpointError, match="byteorder"):
        load_state_dict(bad)


# --------------------------------------------------------------------------
# property: arbitrary strided views round-trip
# --------------------------------------------------------------------------


def test_random_views_roundtrip() -> None:
    torch = _torch()
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hypothesis.settings(max_examples=30, deadline=None)
    @hypothesis.given(
        shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
        data=st.data(),
        legacy=st.booleans(),
    )
    def check(shape: list[int], data: Any, legacy: bool) -> None:
        base = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
        view = base
        for dim, n in enumerate(shape):
            start = data.draw(st.integers(0, n - 1))
            step = data.draw(st.integers(1, 3))
            view = view.narrow(dim, start, n - start)[(slice(None),) * dim + (slice(None, None, step),)]
        perm = data.draw(st.permutations(range(len(shape))))
        view = view.permute(*perm)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "v.pth"
            torch.save({"view": view, "base": base}, path, _use_new_zipfile_serialization=not legacy)
            got = load_state_dict(path)
        np.testing.assert_array_equal(got["view"], view.contiguous().numpy())
        assert got["view"].flags.c_contiguous

    check()


def test_loading_never_imports_torch(tmp_path: Path) -> None:
    data = _pickle({"w": _tensor("0", 3, (3,), (1,))})
    path = _write_torch_zip(tmp_path / "w.pth", data, {"0": np.array([1, 2, 3], "<f4").tobytes()})
    code = (
        "import sys\n"
        "from synctalk_fast.models import load_state_dict\n"
        f"sd = load_state_dict({str(path)!r})\n"
        "assert sd['w'].tolist() == [1.0, 2.0, 3.0], sd\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    # Outside the checkout: `python -c` would import the source tree first.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())
