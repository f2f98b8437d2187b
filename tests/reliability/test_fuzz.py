"""Property-based tests: random and mutated input raises the project's own error, and nothing
else. Example counts are small (the suite stays fast); each run draws new examples."""

from __future__ import annotations

import argparse
import gzip
import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.cli import _input_size, build_parser
from cnnlab.data import formats
from cnnlab.errors import DatasetError, UsageError
from cnnlab.train.config import FIELDS, TrainConfig, _parse_floats, _parse_kv, merge, read_yaml

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


_PARSER = build_parser()
_GOOD_IDX = _idx(np.arange(2 * 3 * 4).reshape(2, 3, 4))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, "PNG")
    return buf.getvalue()


_GOOD_PNG = _png()


@st.composite
def mutated(draw, good: bytes):
    """`good` with a few bytes overwritten, a cut, or junk appended."""
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    return bytes(data) + draw(st.binary(max_size=8))


# ---- dataset readers ---------------------------------------------------------------------------

@FAST
@given(st.one_of(st.binary(max_size=64), mutated(_GOOD_IDX)))
def test_idx_reader_raises_only_dataset_error(data):
    try:
        arr = formats.parse_idx(data)
    except DatasetError:
        return
    assert arr.size * arr.dtype.itemsize == len(data) - 4 - 4 * data[3]


@FAST
@given(st.one_of(st.binary(max_size=64), mutated(gzip.compress(_GOOD_IDX))))
def test_gzip_layer_raises_only_dataset_error(tmp_path, data):
    path = tmp_path / "f.gz"
    path.write_bytes(data)
    try:
        formats.read_idx(path)
    except DatasetError:
        pass


@FAST
@given(st.binary(max_size=3 * 3073 + 5), st.sampled_from([1, 2]))
def test_cifar_record_reader_raises_only_dataset_error(data, label_bytes):
    try:
        images, labels = formats.parse_cifar_records(data, label_bytes)
    except DatasetError:
        return
    assert images.shape[1:] == (3, 32, 32) and len(labels) * (label_bytes + 3072) == len(data)


@FAST
@given(st.one_of(st.binary(max_size=200), mutated(_GOOD_PNG)), st.sampled_from([1, 3]))
def test_image_decoder_raises_only_dataset_error(data, channels):
    try:
        arr = formats.decode_image(data, channels)
    except DatasetError:
        return
    assert arr.dtype == np.uint8 and arr.shape[0] == channels


@FAST
@given(st.lists(st.one_of(st.binary(max_size=40), mutated(_GOOD_PNG)), min_size=1, max_size=3))
def test_image_folder_reader_raises_only_dataset_error(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("folder")
    for split in ("train", "test"):
        d = root / split / "c0"
        d.mkdir(parents=True)
        for i, data in enumerate(files):
            (d / f"{i}.png").write_bytes(data)
    try:
        images, labels, classes, _ = formats.read_image_folder(root, "train")
    except DatasetError:
        return
    assert len(images) == len(files) and classes == ["c0"]


@FAST
@given(st.one_of(st.binary(max_size=300), mutated(gzip.compress(b"train/c/0.png" * 20))))
@example(b"\x1f\x8b\x08")  # a gzip header cut short: tarfile's stream reader raised TypeError
def test_archive_reader_raises_only_dataset_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("tar") / "a.tar.gz"
    path.write_bytes(data)
    with pytest.raises(DatasetError):
        formats.read_image_archive(path)


# ---- config and flag parsers ------------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.lists(st.floats(-1e3, 1e3), max_size=3), st.dictionaries(
                        st.text(max_size=4), st.integers(), max_size=2))


@FAST
@given(st.sampled_from(sorted(FIELDS)), _VALUES)
def test_config_values_are_accepted_or_a_usage_error(name, value):
    cfg = TrainConfig(model="lenet5", dataset="mnist")
    try:
        merge(cfg, {name: value}, "fuzz.yaml").validate()
    except UsageError:
        pass


@FAST
@given(st.text(max_size=80))
def test_yaml_files_are_a_mapping_or_a_usage_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        assert isinstance(read_yaml(path), dict)
    except UsageError:
        pass


@FAST
@given(st.text(max_size=30))
@example("a=[")  # a YAML value that does not parse (found by hand, not by the fuzzer)
@example("dropout=0.3,,width=:")
def test_list_and_key_value_flags_parse_or_say_why(text):
    for parse in (_parse_floats, _parse_kv):
        try:
            parse(text)
        except argparse.ArgumentTypeError:
            pass


@FAST
@given(st.sampled_from(["--lr", "--epochs", "--seed", "--milestones", "--model-kwargs",
                        "--pixel-range", "--eval-every", "--image-size"]), st.text(max_size=12))
def test_train_flags_parse_or_exit_2(flag, text):
    assume(not text.startswith("-"))
    try:
        _PARSER.parse_args(["train", "lenet5", "--dataset", "mnist", flag, text])
    except SystemExit as stop:
        assert stop.code == 2


@FAST
@given(st.one_of(st.text(max_size=15), st.lists(st.integers(-3, 300), min_size=1, max_size=4)
                 .map(lambda v: ",".join(map(str, v)))))
def test_input_sizes_parse_to_three_positive_ints_or_say_why(text):
    try:
        dims = _input_size(text)
    except argparse.ArgumentTypeError:
        return
    assert len(dims) == 3 and min(dims) >= 1


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["lenet5", "resnet20", "nin"]), st.integers(1, 3),
       st.integers(1, 70), st.integers(1, 70), st.booleans())
def test_the_analyzer_answers_every_input_size(model, c, h, w, train):
    """Either a summary whose minimum input fits the size, or the project's error."""
    from cnnlab.analysis import summarize

    try:
        s = summarize(model, (c, h, w), train=train)
    except UsageError:
        return
    assert all(m <= n for m, n in zip(s.totals.min_input_size[1:], (h, w), strict=True))
