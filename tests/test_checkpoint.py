"""Checkpoints: exact round trips, atomic writes under injected failures, and every kind of bad file
refused with a CheckpointError naming the file, without ever unpickling."""

import errno
import io
import json
import os
import pickle
import re
import socket
import stat
import struct
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nprnn.checkpoint as ckpt
from nprnn.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    open_checkpoint,
    rng_from_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Evil:
    """Unpickling this runs ``os.mkdir(marker)``: the side effect proves whether pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def arrays_example(rng):
    return {
        "params/0": rng.standard_normal((3, 4)).astype(np.float32),
        "params/1": rng.standard_normal(5),
        "optim/t": np.array(7),
        "vocab": np.array(["<eos>", "the", "naïve", "日本"]),
        "mask": np.array([True, False]),
        "ids": np.arange(10, dtype=np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "file": np.ones(2),  # names np.savez would choke on
        "allow_pickle": np.ones(1),
    }


META = {"config": {"model": "lstm", "hidden": 100, "tie": True}, "epoch": 3, "step": 1234, "best": 136.25}


def assert_same_arrays(got, expected):
    assert got.keys() == expected.keys()
    for k, a in expected.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape, k
        np.testing.assert_array_equal(got[k], a)


def npy_bytes(a):
    f = io.BytesIO()
    np.lib.format.write_array(f, a, allow_pickle=False)
    return f.getvalue()


def dir_listing(path):
    return sorted(os.listdir(path))


# ---------------------------------------------------------------- round trip


def test_round_trip(tmp_path, rng):
    arrays = arrays_example(rng)
    path = tmp_path / "model.npz"
    save_checkpoint(path, arrays, META)
    got, meta = load_checkpoint(path)
    assert_same_arrays(got, arrays)
    assert meta == META
    assert dir_listing(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_is_a_plain_npz(tmp_path, rng):
    arrays = arrays_example(rng)
    save_checkpoint(tmp_path / "c.npz", arrays, META)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert set(z.files) == set(arrays) | {"__nprnn__"}
        np.testing.assert_array_equal(z["params/1"], arrays["params/1"])
        assert json.loads(str(z["__nprnn__"]))["meta"] == META


def test_overwrite_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {"n": 1})
    os.chmod(path, 0o640)
    save_checkpoint(path, {"b": np.ones(3)}, {"n": 2})
    arrays, meta = load_checkpoint(path)
    assert list(arrays) == ["b"] and meta == {"n": 2}
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_optimizer_state_round_trip(tmp_path, rng):
    """An optimizer's state_dict (ints, floats, arrays) goes in as is and resumes bit for bit."""
    from nprnn.optim import Adam

    params = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(4)]
    straight, opt = [p.copy() for p in params], Adam(lr=0.01)
    for g in grads:
        opt.update(straight, g)

    first, resumed = Adam(lr=0.01), [p.copy() for p in params]
    for g in grads[:2]:
        first.update(resumed, g)
    state = {f"optim/{k}": v for k, v in first.state_dict().items()}
    save_checkpoint(tmp_path / "c.npz", {"p/0": resumed[0], "p/1": resumed[1], **state}, {})
    arrays, _ = load_checkpoint(tmp_path / "c.npz")
    assert arrays["optim/t"].shape == () and arrays["optim/book"].dtype.kind == "i"
    second = Adam(lr=5.0)
    second.load_state_dict({k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")})
    resumed = [arrays["p/0"], arrays["p/1"]]
    for g in grads[2:]:
        second.update(resumed, g)
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a, b)


def test_meta_keeps_infinity(tmp_path):
    save_checkpoint(tmp_path / "c.npz", {}, {"best": float("inf")})
    assert load_checkpoint(tmp_path / "c.npz")[1] == {"best": float("inf")}


DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint16, np.uint64, np.bool_]


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(0, 4), max_size=3).map(tuple),
    name=st.text(alphabet="abcxyz_/.0123-", min_size=1, max_size=12).filter(lambda s: not s.startswith("/")),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path_factory, dtype, shape, name, seed):
    r = np.random.default_rng(seed)
    a = np.asarray(r.standard_normal(shape) * 50).astype(dtype)
    path = tmp_path_factory.mktemp("prop") / "c.npz"
    save_checkpoint(path, {name: a}, {"seed": seed})
    got, meta = load_checkpoint(path)
    assert_same_arrays(got, {name: a})
    assert meta == {"seed": seed}


# ---------------------------------------------------------------- RNG state


@pytest.mark.parametrize("bit_generator", ["PCG64", "MT19937", "Philox", "SFC64", "PCG64DXSM"])
def test_rng_state_survives_a_checkpoint(tmp_path, bit_generator):
    rng = np.random.Generator(getattr(np.random, bit_generator)(42))
    rng.standard_normal(7)
    rng.integers(0, 10, size=3, dtype=np.uint32)  # odd count of 32-bit draws: a buffered half word
    save_checkpoint(tmp_path / "c.npz", {}, {"rng": rng_state(rng)})
    expected = (rng.standard_normal(5), rng.integers(0, 1000, 5, dtype=np.uint32), rng.random(3))

    _, meta = load_checkpoint(tmp_path / "c.npz")
    restored = rng_from_state(meta["rng"])
    got = (restored.standard_normal(5), restored.integers(0, 1000, 5, dtype=np.uint32), restored.random(3))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_set_rng_state_into_an_existing_generator():
    rng = np.random.default_rng(5)
    state = rng_state(rng)
    expected = rng.random(4)
    held = np.random.default_rng(999)  # e.g. the generator a dropout layer keeps
    set_rng_state(held, state)
    np.testing.assert_array_equal(held.random(4), expected)


def test_rng_state_errors():
    with pytest.raises(ValueError, match="expected a numpy.random.Generator, got RandomState"):
        rng_state(np.random.RandomState(0))
    with pytest.raises(ValueError, match="unknown bit generator 'os.system'"):
        rng_from_state({"bit_generator": "os.system", "state": {}})
    with pytest.raises(ValueError, match="uses PCG64, the state is for 'MT19937'"):
        set_rng_state(np.random.default_rng(), rng_state(np.random.Generator(np.random.MT19937(1))))
    with pytest.raises(ValueError, match="invalid PCG64 state"):
        rng_from_state({"bit_generator": "PCG64", "state": {"state": "x"}})


# ---------------------------------------------------------------- atomic writes


@pytest.fixture
def previous(tmp_path, rng):
    """A good checkpoint already on disk, and its exact bytes."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, arrays_example(rng), META)
    return path, path.read_bytes()


def failing_after(n, exc):
    """A write_array that writes ``n`` members, then starts the next one and fails halfway."""
    real = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            fp.write(b"\x93NUMPY partial")
            raise exc
        return real(fp, array, *args, **kwargs)

    return write_array


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_while_writing_leaves_old_file(monkeypatch, previous, rng, exc):
    path, old = previous
    monkeypatch.setattr(np.lib.format, "write_array", failing_after(2, exc))
    with pytest.raises(type(exc)):
        save_checkpoint(path, {"a": np.zeros(3), "b": np.ones(3), "c": np.ones(4)}, {"epoch": 4})
    assert path.read_bytes() == old
    assert dir_listing(path.parent) == [path.name]


def test_failure_in_replace_leaves_old_file(monkeypatch, previous):
    path, old = previous

    def replace(src, dst):
        assert os.path.exists(src)  # the complete new file was there, about to be renamed
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"a": np.zeros(3)}, {"epoch": 4})
    assert str(info.value) == f"{path}: Permission denied" and info.value.errno == errno.EACCES
    assert path.read_bytes() == old
    assert dir_listing(path.parent) == [path.name]


def test_failure_in_fsync_leaves_old_file(monkeypatch, previous):
    path, old = previous

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        save_checkpoint(path, {"a": np.zeros(3)}, {"epoch": 4})
    assert path.read_bytes() == old
    assert dir_listing(path.parent) == [path.name]


def test_failure_on_first_write_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(np.lib.format, "write_array", failing_after(0, OSError(28, "full")))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.npz", {"a": np.zeros(3)}, {})
    assert dir_listing(tmp_path) == []


def test_the_new_file_is_written_before_the_old_one_is_replaced(monkeypatch, previous):
    """What a reader sees at the moment of the rename: the old file intact, the new one complete."""
    path, old = previous
    real_replace, seen = os.replace, {}

    def replace(src, dst):
        seen["old"] = open(dst, "rb").read()
        seen["new"] = load_checkpoint(src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(path, {"a": np.arange(4.0)}, {"epoch": 5})
    assert seen["old"] == old
    np.testing.assert_array_equal(seen["new"][0]["a"], np.arange(4.0))
    assert load_checkpoint(path)[1] == {"epoch": 5}


@pytest.mark.parametrize(
    "arrays, meta, match",
    [
        ({"w": np.array([1.0, np.nan])}, {}, "'w' contains NaN or Inf"),
        ({"w": np.array([np.inf], np.float32)}, {}, "'w' contains NaN or Inf"),
        ({"o": np.array([object()], dtype=object)}, {}, "'o' has dtype object"),
        ({"s": np.zeros(2, dtype=[("x", "f8"), ("y", "i4")])}, {}, "'s' has dtype"),
        ({"l": [1.0, 2.0]}, {}, "'l' must be a NumPy array or number, got list"),
        ({"s": "text"}, {}, "'s' must be a NumPy array or number, got str"),
        ({"__nprnn__": np.zeros(1)}, {}, "bad array name '__nprnn__'"),
        ({"": np.zeros(1)}, {}, "bad array name ''"),
        ({3: np.zeros(1)}, {}, "bad array name 3"),
        ({"a": np.zeros(1)}, {"s": {1, 2}}, "meta must be JSON-serializable"),
        ({"a": np.zeros(1)}, "epoch 3", "meta must be a dict"),
        ([np.zeros(1)], {}, "arrays must be a dict"),
    ],
)
def test_refused_before_anything_is_written(previous, arrays, meta, match):
    path, old = previous
    with pytest.raises(ValueError, match=match):
        save_checkpoint(path, arrays, meta)
    assert path.read_bytes() == old
    assert dir_listing(path.parent) == [path.name]


def test_non_finite_allowed_when_asked(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.array([np.nan, np.inf, 1.0]), "i": np.arange(2)}, {}, finite=False)
    w = load_checkpoint(path, finite=False)[0]["w"]
    assert np.isnan(w[0]) and w[1] == np.inf
    expect_error(path, r"member 'w.npy' holds 2 NaN or Inf values of 3; expected finite floats")


# ---------------------------------------------------------------- bad files


def expect_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.npz", "no such checkpoint file")


def test_directory(tmp_path):
    expect_error(tmp_path, "is a directory")


@pytest.mark.parametrize("keep", [0.5, 0.9, -22, -1, 1])
def test_truncated_file(previous, keep):
    path, old = previous
    n = int(len(old) * keep) if isinstance(keep, float) else (len(old) + keep if keep < 0 else keep)
    path.write_bytes(old[:n])
    expect_error(path, "corrupted or truncated|not a zip archive")


def test_empty_file(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"")
    expect_error(tmp_path / "c.npz", "not a zip archive")


def test_garbage_file(tmp_path, rng):
    path = tmp_path / "c.npz"
    path.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect_error(path, "not a zip archive")
    path.write_bytes(b"PK" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())  # zip magic, garbage after
    expect_error(path, "corrupted or truncated")


def test_flipped_byte_fails_the_crc(tmp_path):
    path = tmp_path / "c.npz"
    data = np.arange(1000, dtype=np.float64)
    save_checkpoint(path, {"data": data}, {})
    raw = bytearray(path.read_bytes())
    at = raw.find(data.tobytes()[:64]) + 4000  # inside the array's bytes
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    expect_error(path, "Bad CRC-32")


def test_npz_with_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Evil(live)))  # the payload works when unpickled...
    assert live.exists()

    path = tmp_path / "c.npz"
    np.savez(path, __nprnn__=np.array(json.dumps({"format": "nprnn-checkpoint", "version": 1, "meta": {}})),
             w=np.array([Evil(marker)], dtype=object))  # fmt: skip
    expect_error(path, "member 'w.npy' is an object array; refused")
    assert not marker.exists()  # ...but loading the checkpoint did not unpickle it


def test_pickle_renamed_npz_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"params": [np.zeros(3)], "x": Evil(marker)}))
    expect_error(path, "not a zip archive .*looks like a pickle")
    assert not marker.exists()


def test_npy_renamed_npz(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    os.rename(tmp_path / "w.npy", tmp_path / "w.npz")
    expect_error(tmp_path / "w.npz", "not a zip archive")


def test_npz_without_meta(tmp_path):
    np.savez(tmp_path / "c.npz", w=np.zeros(3))
    expect_error(tmp_path / "c.npz", "not an nprnn checkpoint .*no '__nprnn__' metadata member")


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"format": "nprnn-checkpoint", "version": 2, "meta": {}}, "format version 2; this nprnn reads version 1"),
        ({"format": "nprnn-checkpoint", "meta": {}}, "format version None"),
        ({"format": "torch", "version": 1, "meta": {}}, "does not describe an 'nprnn-checkpoint' file"),
        ({"format": "nprnn-checkpoint", "version": 1, "meta": [1]}, "has no 'meta' dict"),
        ("not json {", "not valid JSON"),
        (["a", "list"], "does not describe"),
    ],
)
def test_bad_metadata(tmp_path, meta, match):
    text = meta if isinstance(meta, str) else json.dumps(meta)
    np.savez(tmp_path / "c.npz", w=np.zeros(3), __nprnn__=np.array(text))
    expect_error(tmp_path / "c.npz", match)


def test_metadata_of_wrong_type(tmp_path):
    np.savez(tmp_path / "c.npz", __nprnn__=np.zeros(3))
    expect_error(tmp_path / "c.npz", "metadata member '__nprnn__' must be a unicode string")


def test_zip_with_foreign_member(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    expect_error(tmp_path / "c.npz", "unexpected member 'readme.txt'")


def test_zip_member_that_is_not_npy(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as zf:
        zf.writestr("w.npy", b"definitely not an array")
        zf.writestr("__nprnn__.npy", npy_bytes(np.array(json.dumps({"format": ckpt.FORMAT, "version": 1, "meta": {}}))))
    expect_error(tmp_path / "c.npz", "member 'w.npy' is not a valid .npy array")


def test_compressed_npz_loads(tmp_path):
    text = json.dumps({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": {"k": 1}})
    np.savez_compressed(tmp_path / "c.npz", w=np.arange(5.0), __nprnn__=np.array(text))
    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(arrays["w"], np.arange(5.0))
    assert meta == {"k": 1}


# ---------------------------------------------------------------- bounded reading (issue 14, point 3)


def meta_npy(meta=None):
    return npy_bytes(np.array(json.dumps({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": meta or {}})))


def npy_header(shape, descr="<f8", fortran=False, version=1):
    """The bytes of an .npy header declaring ``shape`` and ``descr``, without any data."""
    f = io.BytesIO()
    d = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    getattr(np.lib.format, f"write_array_header_{version}_0")(f, d)
    return f.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip of ``{member name: bytes}``, the valid metadata member added unless given."""
    members = dict(members)
    members.setdefault("__nprnn__.npy", meta_npy())
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_header_declaring_2_to_the_40_floats(tmp_path):
    path = write_zip(tmp_path / "c.npz", {"w.npy": npy_header((2**40,)) + b"\0" * 64})
    tracemalloc.start()
    try:
        expect_error(path, r"member 'w.npy' declares shape \(1099511627776,\) of float64, 8.0 TiB .*holds 192 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_header_declaring_too_few_bytes(tmp_path):
    path = write_zip(tmp_path / "c.npz", {"w.npy": npy_header((3,)) + b"\0" * 32})
    expect_error(path, r"member 'w.npy' declares shape \(3,\) of float64, 152 bytes with its header, but holds 160")


def test_the_spec_is_checked_before_reading_through_the_reader(tmp_path):
    path = write_zip(tmp_path / "c.npz", {"w.npy": npy_header((2**40, 2**40)) + b"\0" * 8})
    with pytest.raises(CheckpointError, match="declares shape"), open_checkpoint(path) as reader:
        reader.spec("w")


def test_huge_header_length_is_refused(tmp_path):
    raw = np.lib.format.magic(2, 0) + struct.pack("<I", 2**31) + b" " * 100
    expect_error(write_zip(tmp_path / "c.npz", {"w.npy": raw}), "2,147,483,648-byte .npy header; at most 10,000")


def zip_bomb(path, inflated):
    """A valid checkpoint plus a deflated member of ``inflated`` zero bytes (a 1000:1 ratio)."""
    save_checkpoint(path, {"a": np.ones(3, np.float32)}, {"k": 1})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.npy", "w", force_zip64=True) as member:
            member.write(npy_header((inflated,), "|u1"))
            for at in range(0, inflated, 2**20):
                member.write(bytes(min(2**20, inflated - at)))
    return path


def test_compressed_member_inflating_far_beyond_the_file_is_refused_before_inflating(tmp_path):
    path = zip_bomb(tmp_path / "bomb.npz", 64 * 2**20)
    assert path.stat().st_size < 2**20  # a small file that would inflate to 64 MiB
    tracemalloc.start()
    try:
        expect_error(path, r"member 'bomb.npy' would inflate from .* KiB to 64.0 MiB; refused \(at most 32x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20


def test_unknown_member_is_refused_unread(tmp_path):
    path = zip_bomb(tmp_path / "bomb.npz", 2**19)  # below the floor: this one would be read
    assert set(load_checkpoint(path)[0]) == {"a", "bomb"}
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zipfile.ZipFile, "open", spy)
        with pytest.raises(CheckpointError, match=r"unexpected member 'bomb.npy'; expected only 'a'") as info:
            load_checkpoint(path, allowed={"a"})
    assert str(path) in str(info.value)
    assert opened == []  # refused from the zip directory alone: not even the metadata was read
    with pytest.raises(CheckpointError, match="unexpected member 'bomb.npy'; expected only the arrays"):
        load_checkpoint(path, allowed=lambda name: not name.startswith("bomb"))
    assert set(load_checkpoint(path, allowed=lambda name: True)[0]) == {"a", "bomb"}


def test_honestly_compressed_npz_loads(tmp_path):
    path = tmp_path / "c.npz"
    text = json.dumps({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": {}})
    np.savez_compressed(path, z=np.zeros(100_000, np.float32), __nprnn__=np.array(text))  # 400 KB of zeros
    np.testing.assert_array_equal(load_checkpoint(path)[0]["z"], np.zeros(100_000, np.float32))


def test_too_many_members(tmp_path):
    members = {f"m{i}.npy": npy_bytes(np.zeros(1, np.float32)) for i in range(ckpt.MAX_MEMBERS)}
    expect_error(write_zip(tmp_path / "c.npz", members), "4,097 members; a checkpoint holds at most 4,096")
    with pytest.raises(ValueError, match="4,096 arrays; at most 4,095"):
        save_checkpoint(tmp_path / "d.npz", {f"m{i}": np.zeros(1) for i in range(ckpt.MAX_MEMBERS)}, {})


def test_metadata_size_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {}, {"vocab": ["word"] * 300})
    monkeypatch.setattr(ckpt, "MAX_META_BYTES", 4000)
    expect_error(path, r"metadata member '__nprnn__' is .* KiB; at most 3,906.2|at most 3.9 KiB")
    with pytest.raises(ValueError, match="meta is .* characters of JSON; at most 1,000"):
        save_checkpoint(tmp_path / "d.npz", {}, {"vocab": ["word"] * 300})
    assert not (tmp_path / "d.npz").exists()


def test_deeply_nested_metadata_is_refused(tmp_path):
    write_zip(tmp_path / "c.npz", {"__nprnn__.npy": npy_bytes(np.array("[" * 100_000))})
    expect_error(tmp_path / "c.npz", "metadata is not valid JSON")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.ones(2, np.complex128), "complex128; expected bool, integer, float or unicode (not complex"),
        (np.array([b"ab"]), "|S2; expected bool, integer, float or unicode"),
        (np.zeros(2, ">f8"), ">f8; expected native byte order <f8"),
        (np.zeros(2, ">i4"), ">i4; expected native byte order <i4"),
        (np.zeros(2, "datetime64[s]"), "datetime64[s]; expected bool"),
        (np.zeros(2, np.longdouble), "float128; expected a float of 2 or 4 or 8 bytes"),
        (np.zeros(2, [("x", "<f4")]), "[('x', '<f4')]; expected a plain bool, integer, float or unicode dtype, not a"),
        (np.zeros(2, "V4"), "|V4; expected a plain bool, integer, float or unicode dtype, not a structured one"),
    ],
    ids=["complex", "bytes", "big-endian-float", "big-endian-int", "datetime", "longdouble", "structured", "void"],
)
def test_refused_dtypes(tmp_path, array, match):
    path = write_zip(tmp_path / "c.npz", {"x.npy": npy_bytes(array)})
    expect_error(path, "member 'x.npy' has dtype " + re.escape(match))
    with pytest.raises(ValueError, match="save_checkpoint: 'x' has dtype"):
        save_checkpoint(tmp_path / "d.npz", {"x": array}, {})


def test_fortran_ordered_arrays_round_trip(tmp_path, rng):
    w = np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32))
    save_checkpoint(tmp_path / "c.npz", {"w": w, "wt": w.T[:, :2].T}, {})
    got = load_checkpoint(tmp_path / "c.npz")[0]
    np.testing.assert_array_equal(got["w"], w)
    np.testing.assert_array_equal(got["wt"], w.T[:, :2].T)


def test_duplicate_member(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(tmp_path / "c.npz", "w") as zf:
            zf.writestr("__nprnn__.npy", meta_npy())
            zf.writestr("w.npy", npy_bytes(np.zeros(2)))
            zf.writestr("w.npy", npy_bytes(np.ones(2)))
    expect_error(tmp_path / "c.npz", "member 'w.npy' appears twice")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compression_methods_are_refused(tmp_path, method):
    path = write_zip(tmp_path / "c.npz", {"w.npy": npy_bytes(np.zeros(2))}, compression=method)
    expect_error(path, f"uses zip compression method {method}; expected stored or deflate")


# ---------------------------------------------------------------- paths and write errors (issue 14, point 4)


def timed_error(path, match):
    start = time.monotonic()
    err = expect_error(path, match)
    assert time.monotonic() - start < 1.0
    return err


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "c.npz"
    os.mkfifo(path)
    timed_error(path, r"not a regular file \(it is a FIFO\); expected a checkpoint .npz file")
    with pytest.raises(CheckpointError, match="it is a FIFO"):
        open_checkpoint(path)


def test_fifo_swapped_in_after_the_stat_does_not_block(tmp_path, monkeypatch):
    """The race: the stat saw a regular file, the open finds a FIFO. O_NONBLOCK and fstat catch it."""
    path, fifo = tmp_path / "c.npz", tmp_path / "fifo"
    save_checkpoint(path, {}, {})
    os.mkfifo(fifo)
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: real_open(fifo if os.fspath(p) == str(path) else p, *a, **k))
    timed_error(path, r"not a regular file \(it is a FIFO\)")


def test_dev_zero_is_refused(tmp_path):
    timed_error("/dev/zero", r"^/dev/zero: not a regular file \(it is a character device\)")


def test_directory_is_refused(tmp_path):
    timed_error(tmp_path, r"not a regular file \(it is a directory\)")


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        timed_error(path, r"not a regular file \(it is a socket\)")


def test_unreadable_path(tmp_path):
    expect_error(tmp_path / "file" / "c.npz", "no such checkpoint file")
    (tmp_path / "file").write_text("x")
    expect_error(tmp_path / "file" / "c.npz", r"cannot read checkpoint \(Not a directory\)")


def test_a_symlinked_checkpoint_is_read_through(tmp_path):
    save_checkpoint(tmp_path / "real.npz", {"a": np.ones(2)}, {"k": 1})
    os.symlink("real.npz", tmp_path / "link.npz")
    assert load_checkpoint(tmp_path / "link.npz")[1] == {"k": 1}


def test_a_symlinked_checkpoint_is_written_through_to_its_target(tmp_path):
    target_dir = tmp_path / "store"
    target_dir.mkdir()
    target, link = target_dir / "real.npz", tmp_path / "checkpoint.npz"
    save_checkpoint(target, {"a": np.zeros(2)}, {"n": 1})
    os.chmod(target, 0o600)
    os.symlink(os.path.relpath(target, tmp_path), link)
    save_checkpoint(link, {"a": np.ones(2)}, {"n": 2})
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.npz")
    assert load_checkpoint(target)[1] == {"n": 2}
    assert os.stat(target).st_mode & 0o777 == 0o600  # the target's mode is kept
    assert dir_listing(tmp_path) == ["checkpoint.npz", "store"] and dir_listing(target_dir) == ["real.npz"]


def test_a_dangling_symlink_is_written_through(tmp_path):
    os.symlink("elsewhere.npz", tmp_path / "link.npz")
    save_checkpoint(tmp_path / "link.npz", {"a": np.ones(2)}, {})
    assert (tmp_path / "link.npz").is_symlink() and (tmp_path / "elsewhere.npz").is_file()


def test_a_chain_of_symlinks_is_written_through(tmp_path):
    save_checkpoint(tmp_path / "real.npz", {}, {"n": 1})
    os.symlink("real.npz", tmp_path / "one.npz")
    os.symlink("one.npz", tmp_path / "two.npz")
    save_checkpoint(tmp_path / "two.npz", {}, {"n": 2})
    assert (tmp_path / "one.npz").is_symlink() and (tmp_path / "two.npz").is_symlink()
    assert load_checkpoint(tmp_path / "real.npz")[1] == {"n": 2}


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_names_the_file_and_leaves_the_old_one(monkeypatch, previous, where):
    path, old = previous
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", enospc)
    else:  # the file object's own writes fail once some bytes went out
        monkeypatch.setattr(ckpt, "_write_npz", lambda f, members: (f.write(b"PK\3\4 partial"), f.flush(), enospc()))
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"a": np.zeros(3)}, {"epoch": 4})
    err = info.value
    assert str(err) == f"{path}: No space left on device"
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == str(path)
    assert isinstance(err.__cause__, OSError)
    assert path.read_bytes() == old
    assert dir_listing(path.parent) == [path.name]


def test_disk_full_through_a_symlink_leaves_the_target_and_the_link(monkeypatch, previous):
    path, old = previous
    link = path.parent / "link.npz"
    os.symlink(path.name, link)
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(CheckpointWriteError, match=f"^{re.escape(str(link))}: No space left on device$"):
        save_checkpoint(link, {"a": np.zeros(3)}, {})
    assert path.read_bytes() == old and link.is_symlink()
    assert dir_listing(path.parent) == sorted([path.name, link.name])


def test_write_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointWriteError, match=f"^{re.escape(str(tmp_path / 'no' / 'c.npz'))}: No such file"):
        save_checkpoint(tmp_path / "no" / "c.npz", {}, {})
    with pytest.raises(CheckpointWriteError, match=f"^{re.escape(str(tmp_path))}: is a directory, not a regular"):
        save_checkpoint(tmp_path, {}, {})
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CheckpointWriteError, match="fifo: is a FIFO, not a regular file; refusing to replace it"):
        save_checkpoint(tmp_path / "fifo", {}, {})
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)
    assert dir_listing(tmp_path) == ["fifo"]


def test_read_only_directory_names_the_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    def denied(*args, **kwargs):  # what a read-only directory does (root writes anywhere, so simulated)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(CheckpointWriteError, match=r"c.npz: Permission denied$"):
        save_checkpoint(tmp_path / "c.npz", {}, {})
    assert dir_listing(tmp_path) == []


# ---------------------------------------------------------------- the two-phase reader


@pytest.fixture
def saved(tmp_path, rng):
    arrays = {
        "param/000": rng.standard_normal((3, 4000)).astype(np.float32),  # larger than zipfile's 4 KiB reads
        "param/001": rng.standard_normal(4).astype(np.float32),
        "opt/t": np.array(3),
        "vocab": np.array(["a", "b"]),
    }
    path = tmp_path / "c.npz"
    save_checkpoint(path, arrays, META)
    return path, arrays


def corrupt_data_of(path, array):
    """Flip a byte inside ``array``'s data in the file, so reading it fails its CRC."""
    raw = bytearray(path.read_bytes())
    at = raw.find(array.tobytes())
    assert at > 0
    raw[at + array.nbytes - 1] ^= 0xFF  # the last byte: reading the header does not reach it
    path.write_bytes(bytes(raw))


def test_reader_meta_names_and_specs(saved):
    path, arrays = saved
    with open_checkpoint(path) as reader:
        assert reader.meta == META
        assert reader.names == tuple(arrays)
        assert "param/000" in reader and "__nprnn__" not in reader and "nope" not in reader
        assert reader.spec("param/000") == ((3, 4000), np.dtype(np.float32))
        assert reader.spec("opt/t") == ((), np.dtype(np.int64))
        assert reader.spec("vocab") == ((2,), np.dtype("<U1"))
        np.testing.assert_array_equal(reader.read("param/001"), arrays["param/001"])
        np.testing.assert_array_equal(reader.read("param/000", shape=(3, None)), arrays["param/000"])
        assert reader.read("opt/t", (), dtype_kinds="i") == 3
        assert reader.read("vocab", dtype_kinds="U").tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="reader is closed"):
        reader.read("param/001")


def test_specs_and_checks_come_before_the_data_is_read(saved):
    """With the data of param/000 corrupted, only reading it fails its CRC: spec() and every
    shape or dtype check stop before the data."""
    path, arrays = saved
    corrupt_data_of(path, arrays["param/000"])
    with open_checkpoint(path) as reader:
        assert reader.spec("param/000") == ((3, 4000), np.dtype(np.float32))
        for kwargs, match in [
            ({"shape": (3, 5)}, r"has shape \(3, 4000\); expected \(3, 5\)"),
            ({"shape": (None,)}, r"has shape \(3, 4000\); expected \(\*,\)"),
            ({"dtype": np.float64}, "has dtype float32; expected float64"),
            ({"dtype_kinds": "iu"}, "has dtype float32; expected an integer or unsigned integer array"),
        ]:
            with pytest.raises(CheckpointError, match=f"member 'param/000.npy' {match}") as info:
                reader.read("param/000", **kwargs)
            assert str(path) in str(info.value)
        with pytest.raises(CheckpointError, match="Bad CRC-32 for file 'param/000.npy'"):
            reader.read("param/000")
        np.testing.assert_array_equal(reader.read("param/001"), arrays["param/001"])  # the rest still reads


def test_reader_default_reads_floats_only(saved):
    path, _ = saved
    with open_checkpoint(path) as reader:
        with pytest.raises(CheckpointError, match=r"member 'opt/t.npy' has dtype int64; expected a float array"):
            reader.read("opt/t")
        with pytest.raises(CheckpointError, match=r"no member 'param/009.npy'; expected it among the file's 4"):
            reader.spec("param/009")


def test_reader_allowed_names(saved):
    path, arrays = saved
    with open_checkpoint(path, allowed=list(arrays)) as reader:
        assert reader.names == tuple(arrays)
    with pytest.raises(CheckpointError, match=r"unexpected member 'vocab.npy'; expected only 'opt/t', 'param/000'"):
        open_checkpoint(path, allowed=["param/000", "param/001", "opt/t"])
    with pytest.raises(CheckpointError, match="expected no arrays"):
        load_checkpoint(path, allowed=())
    with pytest.raises(TypeError, match="not a string"):
        load_checkpoint(path, allowed="param/000")
    got, meta = load_checkpoint(path, allowed=lambda n: n.startswith(("param/", "opt/", "vocab")))
    assert_same_arrays(got, arrays) and meta == META


def test_reader_closes_its_file(saved, monkeypatch):
    path, _ = saved
    with open_checkpoint(path) as reader:
        f = reader._file
    assert f.closed
    reader.close()  # idempotent


def test_load_checkpoint_dtype_kinds(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="member 'opt/t.npy' has dtype int64; expected a float or unicode"):
        load_checkpoint(path, dtype_kinds="fU")


def test_meta_value(saved):
    path, _ = saved
    with open_checkpoint(path) as reader:
        assert reader.value("config.hidden", int, low=1, high=4096) == 100
        assert reader.value("config.model", str, choices=("rnn", "lstm", "gru")) == "lstm"
        assert reader.value("config.tie", bool) is True
        assert reader.value("epoch", float) == 3.0 and isinstance(reader.value("epoch", float), float)
        assert reader.value("config.layers", int, default=1) == 1
        for args, kwargs, match in [
            (("config.hidden", int), {"high": 64}, r"metadata 'config.hidden' must be int in \[-inf, 64\], got 100"),
            (("config.tie", int), {}, "metadata 'config.tie' must be int, got True"),
            (("config.model", str), {"choices": ["gru"]}, "must be str among 'gru', got 'lstm'"),
            (("config.layers", int), {}, "metadata 'config.layers' is missing"),
            (("config.model.x", int), {}, "metadata 'config.model.x' is missing"),
            (("best", (int, float)), {"low": 0, "high": 100}, r"must be int or float in \[0, 100\], got 136.25"),
        ]:
            with pytest.raises(CheckpointError, match=match) as info:
                reader.value(*args, **kwargs)
            assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(CheckpointError, match=r"^f.npz: metadata 'lr' must be float in \[0, inf\], got nan$"):
        ckpt.meta_value("f.npz", {"lr": float("nan")}, "lr", float, low=0)


# ---------------------------------------------------------------- mutated checkpoints (property)

MUTATION_ARRAYS = {
    "param/000": (np.arange(12, dtype=np.float32).reshape(3, 4) - 5) / 7,
    "param/001": np.linspace(-1, 1, 4, dtype=np.float32),
    "state/h": np.full((2, 1, 3), 0.5, np.float32),
}
MUTATION_META = {
    "config": {"hidden": 4, "cell": "lstm", "tie": False},
    "epoch": 2,
    "best": 12.5,
    "vocab": ["a", "<eos>"],
}

# field offsets (from the signature) and widths in zip records: central directory, local header, end record
ZIP_FIELDS = {
    b"PK\x01\x02": [(10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4)],
    b"PK\x03\x04": [(8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)],
    b"PK\x05\x06": [(8, 2), (10, 2), (12, 4), (16, 4)],
}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("original") / "c.npz"
    save_checkpoint(path, MUTATION_ARRAYS, MUTATION_META)
    return path.read_bytes()


def check_outcome(path, expected=None):
    """Loads and equals ``expected`` (default: what the file honestly holds, read by np.load), or
    raises a one-line CheckpointError naming the file; either way within a second."""
    start = time.monotonic()
    try:
        arrays, meta = load_checkpoint(path)
    except CheckpointError as e:
        message = str(e)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert isinstance(e, ValueError)
        outcome = "refused"
    else:
        if expected is None:
            with np.load(path, allow_pickle=False) as z:
                expected = {k: z[k] for k in z.files}
            expected_meta = json.loads(str(expected.pop("__nprnn__")))["meta"]
        else:
            expected, expected_meta = expected
        assert_same_arrays(arrays, expected)
        for a in arrays.values():
            assert a.dtype.kind in "biufU" and a.dtype.isnative
            assert a.dtype.kind != "f" or np.isfinite(a).all()
        assert json.dumps(meta, sort_keys=True) == json.dumps(expected_meta, sort_keys=True)
        outcome = "loaded"
    assert time.monotonic() - start < 1.0
    return outcome


def patch_field(raw, signature, nth, field, value):
    starts = [i for i in range(len(raw)) if raw.startswith(signature, i)]
    if not starts:
        return raw
    offset, width = ZIP_FIELDS[signature][field % len(ZIP_FIELDS[signature])]
    at = starts[nth % len(starts)] + offset
    raw[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")[: len(raw[at : at + width])]
    return raw


positions = st.integers(0, 2**20)
byte_mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(
        st.just("field"),
        st.sampled_from(list(ZIP_FIELDS)),
        st.integers(0, 8),
        st.integers(0, 8),
        st.one_of(st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    ),
)


def apply_byte_mutation(raw, mutation):
    kind, *args = mutation
    at = args[0] % (len(raw) + 1) if kind != "field" else None
    if kind == "flip" and raw:
        raw[at % len(raw)] ^= args[1]
    elif kind == "truncate":
        del raw[at:]
    elif kind == "insert":
        raw[at:at] = args[1]
    elif kind == "delete":
        del raw[at : at + args[1]]
    elif kind == "overwrite":
        raw[at : at + len(args[1])] = args[1]
    elif kind == "field":
        raw = patch_field(raw, *args)
    return raw


@settings(max_examples=250, deadline=None)
@given(mutations=st.lists(byte_mutation, min_size=1, max_size=3))
def test_byte_mutated_checkpoint_loads_equal_or_is_refused(tmp_path_factory, original, mutations):
    raw = bytearray(original)
    for mutation in mutations:
        raw = apply_byte_mutation(raw, mutation)
    path = tmp_path_factory.mktemp("bytes") / "c.npz"
    path.write_bytes(bytes(raw))
    # every byte that matters is covered by a CRC, a size check or a name check: same content or refused
    event(check_outcome(path, (MUTATION_ARRAYS, MUTATION_META)))


DESCRS = ["<f4", "<f8", "<f2", ">f4", "<c8", "|O", "<U3", "|S2", "<i8", "<u4", "|b1", "<f16", "|V8", "<M8[s]"]
MEMBER_NAMES = ["param/000.npy", "param/001.npy", "x.npy", "__nprnn__.npy", ".npy", "w", "../w.npy", "a/b.npy"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


def npy_data(data):
    """The data bytes of a valid .npy member (after its header)."""
    if data[6] == 1:
        return data[10 + struct.unpack("<H", data[8:10])[0] :]
    return data[12 + struct.unpack("<I", data[8:12])[0] :]


def raw_npy_header(shape, descr, fortran, version):
    """An .npy header written by hand, so it may declare anything (NumPy's writer checks some)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    size = 10 if version == 1 else 12
    text += " " * (-(size + len(text) + 1) % 64) + "\n"
    encoded = text.encode("utf8" if version == 3 else "latin1")
    length = struct.pack("<H" if version == 1 else "<I", len(encoded))
    return b"\x93NUMPY" + bytes([version, 0]) + length + encoded


def zip_can_store(name):
    """zipfile cuts a member name at its first NUL and takes a name ending in "/" for a folder: a
    name it cannot write as a file (found by hypothesis: "\x00" made ``writestr`` raise IndexError)."""
    stored = name.split("\x00", 1)[0]
    return stored != "" and not stored.endswith("/")


member_mutation = st.one_of(
    st.tuples(
        st.just("rename"),
        st.integers(0, 9),
        st.sampled_from(MEMBER_NAMES) | st.text(min_size=1, max_size=8).filter(zip_can_store),
    ),
    st.tuples(st.just("duplicate"), st.integers(0, 9)),
    st.tuples(st.just("drop"), st.integers(0, 9)),
    st.tuples(
        st.just("header"),
        st.integers(0, 9),
        st.lists(st.sampled_from([0, 1, 2, 3, 4, 12, 2**20, 2**40, 2**62]), max_size=3).map(tuple),
        st.sampled_from(DESCRS),
        st.booleans(),
        st.sampled_from([1, 2, 3]),
    ),
    st.tuples(st.just("meta-value"), st.sampled_from(["config", "epoch", "vocab", "new"]), json_values),
    st.tuples(st.just("meta-text"), positions, st.text(max_size=4)),
    st.tuples(st.just("meta-cut"), positions),
    st.tuples(
        st.just("meta-header"),
        st.sampled_from(["format", "version", "meta"]),
        st.sampled_from([None, 0, 1, 2, True, "nprnn-checkpoint", [], {}, 1.0]),
    ),
    st.tuples(
        st.just("extra"),
        st.sampled_from(["x.npy", "opt/m.npy"]),
        st.sampled_from([np.zeros(3, np.float32), np.array([np.nan]), np.ones(2, np.complex64), np.array(["s"])]),
    ),
)


def apply_member_mutation(members, mutation):
    kind, *args = mutation
    if kind in ("rename", "duplicate", "drop", "header") and members:
        i = args[0] % len(members)
        name, data = members[i]
        if kind == "rename":
            members[i] = (args[1], data)
        elif kind == "duplicate":
            members.insert(i, (name, data))
        elif kind == "drop":
            del members[i]
        else:
            shape, descr, fortran, version = args[1:]
            members[i] = (name, raw_npy_header(shape, descr, fortran, version) + npy_data(data))
    elif kind.startswith("meta"):
        i = next((j for j, (n, _) in enumerate(members) if n == "__nprnn__.npy"), None)
        if i is None:
            return
        try:  # as stored by save_checkpoint: UTF-32 code units after the header (np.load would trust a header)
            text = npy_data(members[i][1]).decode("utf-32-le").rstrip("\0")
        except (UnicodeDecodeError, struct.error, IndexError):
            return
        if kind in ("meta-value", "meta-header"):
            try:
                header = json.loads(text)
            except ValueError:
                return
            if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
                return
        if kind == "meta-value":
            header["meta"][args[0]] = args[1]
            text = json.dumps(header)
        elif kind == "meta-text":
            at = args[0] % (len(text) + 1)
            text = text[:at] + args[1] + text[at:]
        elif kind == "meta-cut":
            text = text[: args[0] % (len(text) + 1)]
        else:
            header[args[0]] = args[1]
            text = json.dumps(header)
        members[i] = (members[i][0], npy_bytes(np.array(text)))
    elif kind == "extra":
        members.append((args[0], npy_bytes(args[1])))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(member_mutation, min_size=1, max_size=3),
    compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_member_mutated_checkpoint_loads_what_it_holds_or_refused(tmp_path_factory, original, mutations, compression):
    with zipfile.ZipFile(io.BytesIO(original)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    for mutation in mutations:
        apply_member_mutation(members, mutation)
    path = tmp_path_factory.mktemp("members") / "c.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on the duplicates made on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    event(check_outcome(path))  # valid CRCs everywhere: what np.load reads, or refused


def test_mutations_do_reach_both_outcomes(tmp_path, original):
    """The property tests are not vacuous: some mutations load, others are refused."""
    path = tmp_path / "c.npz"
    raw = bytearray(original)
    raw[raw.find(b"PK\x01\x02") + 12] ^= 1  # the central directory's modification time: harmless
    path.write_bytes(bytes(raw))
    assert check_outcome(path, (MUTATION_ARRAYS, MUTATION_META)) == "loaded"
    path.write_bytes(bytes(patch_field(bytearray(original), b"PK\x01\x02", 0, 3, 2**32 - 1)))  # a size lie
    assert check_outcome(path, (MUTATION_ARRAYS, MUTATION_META)) == "refused"
