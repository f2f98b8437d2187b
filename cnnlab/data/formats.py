"""Readers for the file formats datasets come in: IDX (the MNIST family), CIFAR binary batches,
image folders / image archives, and single images for `predict`.

Every reader returns uint8 images as numpy arrays shaped (N, C, H, W) and labels as int64 (N,);
every malformed input becomes a DatasetError that names the file.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import warnings
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from cnnlab.data.catalog import check_member
from cnnlab.errors import CnnlabWarning, DatasetError, UsageError

# ---- IDX (LeCun's format for MNIST / Fashion-MNIST) -------------------------------------------
# magic = 0x00 0x00 <type code> <number of dimensions>, then one big-endian uint32 per dimension,
# then the data in row-major order (yann.lecun.com/exdb/mnist, "FILE FORMATS").
# What reading a damaged tar(.gz) raises. TypeError too: tarfile's stream reader calls ord() on
# the byte after a gzip header that is cut short (CPython 3.11, tarfile._Stream._init_read_gz).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, TypeError)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic; truncation is an error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({err})") from err


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{name}: not an IDX file (magic {data[:4].hex() or 'empty'})")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{name}: IDX header with {ndim} dimensions is truncated")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise DatasetError(f"{name}: IDX header says {'x'.join(map(str, dims))} "
                           f"({expected} bytes of data) but the file holds {body} bytes: "
                           "truncated or corrupt; delete it and download it again")
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (raw or gzip) as an array of its declared type and shape."""
    return parse_idx(read_bytes(path), str(path))


def read_idx_pair(images_path, labels_path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images (N, 1, H, W) uint8 and labels (N,) int64, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{images_path}: expected uint8 N x H x W images, got "
                           f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{labels_path}: {labels.shape} labels for {len(images)} images")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DatasetError(f"{labels_path}: label {int(labels.max())} >= {num_classes} classes")
    return images[:, None], labels.astype(np.int64)


# ---- CIFAR binary (www.cs.toronto.edu/~kriz/cifar.html, "Binary version") ---------------------
# Each record: <label bytes> then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue, each 32x32
# row-major. CIFAR-10 has 1 label byte; CIFAR-100 has 2 (coarse, then fine).
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_MEMBERS = {
    "cifar10-binary": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                       "test": ["test_batch.bin"], "meta": "batches.meta.txt", "label_bytes": 1},
    "cifar100-binary": {"train": ["train.bin"], "test": ["test.bin"],
                        "meta": "fine_label_names.txt", "label_bytes": 2},
}


def parse_cifar_records(data: bytes, label_bytes: int, name: str = "<bytes>"):
    """-> images (N, 3, 32, 32) uint8, labels (N, label_bytes) uint8."""
    record = label_bytes + _CIFAR_PIXELS
    if not data or len(data) % record:
        raise DatasetError(f"{name}: {len(data)} bytes is not a whole number of "
                           f"{record}-byte CIFAR records: truncated or corrupt")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), rows[:, :label_bytes].copy()


def _read_tar_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the archive members whose base name is in `wanted` (read, not extracted)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                base = PurePosixPath(m.name).name
                if base in wanted and base not in found:
                    check_member(m, path)
                    found[base] = tar.extractfile(m).read()
    except _ARCHIVE_ERRORS as err:
        raise DatasetError(f"{path}: corrupt or truncated archive ({err})") from err
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetError(f"{path}: archive lacks {', '.join(missing)}; is it the official file?")
    return found


def read_cifar_archive(path: str | os.PathLike, fmt: str, split: str):
    """One split of an official CIFAR binary archive -> (images, labels int64, class names)."""
    path, layout = Path(path), _CIFAR_MEMBERS[fmt]
    members = _read_tar_members(path, {*layout[split], layout["meta"]})
    parts = [parse_cifar_records(members[n], layout["label_bytes"], f"{path}:{n}")
             for n in layout[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1][:, -1] for p in parts]).astype(np.int64)  # fine label last
    classes = [c.strip() for c in members[layout["meta"]].decode().splitlines() if c.strip()]
    if len(labels) and labels.max() >= len(classes):
        raise DatasetError(f"{path}: label {labels.max()} but {len(classes)} class names")
    return images, labels, classes


# ---- images -----------------------------------------------------------------------------------
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


# PIL's own default (about 89 million pixels, a 0.25 GB RGB image): anything larger is refused
# before it is decoded, since a few kilobytes of PNG can declare gigabytes of pixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_image_pixels() -> int:
    """The largest image (width x height) decoded: $CNNLAB_MAX_IMAGE_PIXELS, else the default."""
    text = os.environ.get("CNNLAB_MAX_IMAGE_PIXELS")
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"CNNLAB_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}")
    return value


def open_header(src, name: str, max_pixels: int | None = None):
    """PIL's lazy image (header read, pixels not decoded), refused when it declares more than
    `max_pixels` (default max_image_pixels())."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels or max_image_pixels()
    try:
        with warnings.catch_warnings():  # PIL's warning: our own limit is applied below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
    except FileNotFoundError:
        raise UsageError(f"image {name} does not exist") from None
    except Image.DecompressionBombError:  # PIL's own guard, at twice its limit
        img = None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot decode image {name}: {err}") from err
    pixels = None if img is None else img.width * img.height
    if img is None or pixels > limit:
        size = "more pixels than PIL allows" if img is None else \
            f"{img.width} x {img.height} = {pixels:,} pixels"
        raise DatasetError(f"image {name} declares {size}, over the limit of {limit:,} "
                           "(a decompression bomb or an absurd size); to allow it, raise "
                           "CNNLAB_MAX_IMAGE_PIXELS")
    return img


def _open(src, name: str, max_pixels: int | None = None):
    from PIL import Image

    img = open_header(src, name, max_pixels)
    try:
        with warnings.catch_warnings():  # our limit has been applied; PIL's warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # decode now, so a truncated file fails here with its name
        return img
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot decode image {name}: {err}") from err


def to_array(img, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A PIL image -> uint8 (C, H, W): grey, RGB, RGBA (alpha dropped), palette, 16-bit all map
    to `channels` (1 = grey by ITU-R 601 luma, 3 = RGB); resized (bilinear) to `size` (H, W)."""
    from PIL import Image

    if img.mode in ("I", "I;16", "F"):  # scale wide grey into 8 bits instead of clipping
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(a * 255.0 / max(a.max(), 1.0), 0, 255).astype(np.uint8))
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)  # PIL filters when shrinking
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_image(src: bytes | str | os.PathLike, channels: int = 3, size=None,
                 name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    if name is None:
        name = "<image bytes>" if isinstance(src, bytes) else str(src)
    return to_array(_open(src, name, max_pixels), channels, size)


def read_image(path: str | os.PathLike, channels: int = 3,
               max_pixels: int | None = None) -> torch.Tensor:
    """One image file as a uint8 tensor (C, H, W), for `predict`; images over `max_pixels`
    (default max_image_pixels()) are refused before they are decoded."""
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not an image")
    return torch.from_numpy(decode_image(path, channels, max_pixels=max_pixels).copy())


# ---- image folders: <root>/<split>/<class>/<file> ----------------------------------------------
_SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}


def find_split_dir(root: Path, split: str) -> Path:
    root = Path(root)
    for candidate in _SPLIT_ALIASES.get(split, (split,)):
        if (root / candidate).is_dir():
            return root / candidate
    raise DatasetError(f"image folder {root} has no {split}/ folder (expected "
                       f"{root}/train/<class>/<image> and {root}/val/ or {root}/test/)")


def list_image_folder(root, split: str, strict: bool = False
                      ) -> tuple[list[Path], list[int], list[str], str]:
    """-> (files, labels, classes, split folder name); classes are train/'s sorted sub-folders.

    Files in class folders that are not images by their extension are skipped with one
    CnnlabWarning that counts and names them; with `strict` they are a DatasetError instead."""
    root = Path(root)
    train_dir = find_split_dir(root, "train")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{train_dir} has no class folders (expected train/<class>/<image>)")
    split_dir = find_split_dir(root, split)
    index = {c: i for i, c in enumerate(classes)}
    files, labels, skipped = [], [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise DatasetError(f"{class_dir}: class {class_dir.name!r} is not in {train_dir}")
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                files.append(f)
                labels.append(index[class_dir.name])
            else:
                skipped.append(f)
    if skipped:
        _report_skipped(split_dir, skipped, strict)
    if not files:
        raise DatasetError(f"{split_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files, labels, classes, split_dir.name


def _report_skipped(split_dir: Path, skipped: list[Path], strict: bool) -> None:
    import warnings

    names = [str(f.relative_to(split_dir)) for f in skipped]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    what = f"{len(names)} file(s) in {split_dir} that are not images by their extension: {shown}"
    if strict:
        raise DatasetError(f"{what} (strict mode; remove them, or allow skipping)")
    warnings.warn(f"skipped {what}", CnnlabWarning, stacklevel=3)


def probe_images(files: list[Path]) -> tuple[int, tuple[int, int]]:
    """Header-only pass: (channels: 1 if every image is grey else 3, most common (H, W))."""
    modes, sizes = set(), Counter()
    for f in files:
        with open_header(f, str(f)) as img:
            modes.add(img.mode)
            sizes[(img.height, img.width)] += 1
    return (1 if modes <= _GREY_MODES else 3), sizes.most_common(1)[0][0]


def read_image_folder(root, split: str, channels: int | None = None,
                      image_size: int | tuple[int, int] | None = None, strict: bool = False):
    """A whole split decoded into memory -> (images (N,C,H,W) uint8, labels, classes, split)."""
    files, labels, classes, split_name = list_image_folder(root, split, strict)
    channels, size = resolve_layout(root, channels, image_size)
    images = np.stack([decode_image(f, channels, size) for f in files])
    return images, np.asarray(labels, dtype=np.int64), classes, split_name


def resolve_layout(root, channels, image_size) -> tuple[int, tuple[int, int]]:
    """Channels and (H, W) of a folder dataset, decided from its train split for every split."""
    if channels is not None and image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        return channels, size
    found_c, found_size = probe_images(list_image_folder(root, "train")[0])
    if image_size is not None:
        found_size = (image_size, image_size) if isinstance(image_size, int) else image_size
    return channels or found_c, tuple(found_size)


def scan_image_archive(path: str | os.PathLike, stride: int = 1) -> dict[str, list]:
    """One sequential pass over a tar(.gz) of `<split>/<class>/<image>` members (never written to
    disk): {split: [(class, member name, bytes)]} in archive order, listing every image but
    reading the bytes of only every stride-th one per split (b"" for the others)."""
    path = Path(path)
    by_split: dict[str, list[tuple[str, str, bytes]]] = {}
    try:
        with tarfile.open(path, "r|*") as tar:  # stream mode: one sequential pass
            for m in tar:
                check_member(m, path)
                parts = PurePosixPath(m.name).parts
                if not m.isfile() or len(parts) < 3 or Path(parts[-1]).suffix.lower() \
                        not in IMAGE_EXTENSIONS:
                    continue
                entries = by_split.setdefault(parts[-3], [])
                data = tar.extractfile(m).read() if len(entries) % stride == 0 else b""
                entries.append((parts[-2], m.name, data))
    except _ARCHIVE_ERRORS as err:
        raise DatasetError(f"{path}: corrupt or truncated archive ({err})") from err
    if "train" not in by_split:
        raise DatasetError(f"{path}: no train/<class>/<image> members")
    return by_split


def read_image_archive(path: str | os.PathLike, channels: int = 3, stride: int = 1):
    """A tar(.gz) of `<split>/<class>/<image>` -> ({split: (images, labels)}, classes).

    `stride` > 1 decodes only every stride-th image of each split (a quick sample); classes are
    the sorted class names of train/.
    """
    by_split = scan_image_archive(path, stride)
    classes = sorted({cls for cls, _, _ in by_split["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, entries in by_split.items():
        entries = entries[::stride]
        if any(cls not in index for cls, _, _ in entries):
            raise DatasetError(f"{path}: {split}/ has classes that train/ lacks")
        images = np.stack([decode_image(data, channels, None, f"{path}:{name}")
                           for _, name, data in entries])
        labels = np.asarray([index[cls] for cls, _, _ in entries], dtype=np.int64)
        out[split] = (images, labels)
    return out, classes
