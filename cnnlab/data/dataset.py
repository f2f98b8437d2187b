"""`load_dataset`: a catalog name or an image folder -> a whole split in memory (ArrayDataset) or
a file-streaming dataset (FolderDataset) with the same descriptive attributes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import catalog, formats
from cnnlab.errors import DatasetError, UsageError

_STATS_SAMPLE = 10_000  # images used for a folder's mean/std (evenly spaced; exact below this)


@dataclass(eq=False)
class ArrayDataset:
    """A whole split in memory."""

    name: str  # catalog name or folder path
    split: str  # "train" | "test" (or "val")
    images: torch.Tensor  # uint8 (N, C, H, W), CPU
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    mean: tuple[float, ...]  # per-channel normalisation in [0,1] units (train-split statistics)
    std: tuple[float, ...]
    hflip: bool  # horizontal flip is a label-preserving augmentation here

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass(eq=False)
class FolderDataset(torch.utils.data.Dataset):
    """An image folder split read file by file: item i -> (uint8 (C, H, W), label)."""

    name: str
    split: str
    files: list[Path]
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    channels: int
    image_size: tuple[int, int]  # (H, W) every image is resized to

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = formats.decode_image(self.files[i], self.channels, self.image_size)
        return torch.from_numpy(img.copy()), int(self.labels[i])


def stratified_subset(ds, n: int | None, seed: int = 0):
    """A seeded sample of `n` items of `ds` (ArrayDataset or FolderDataset) with each class in
    its proportion (largest remainders; at least one of each class when n allows), in the
    dataset's order. All of `ds` when n is None or not smaller than it."""
    if n is None or n >= len(ds):
        return ds
    labels = ds.labels
    counts = torch.bincount(labels, minlength=len(ds.classes)).double()
    share = counts * n / len(ds)
    take = share.floor().long()
    if n >= int((counts > 0).sum()):  # every present class gets at least one
        take = torch.maximum(take, (counts > 0).long())
    rest = n - int(take.sum())
    if rest > 0:  # largest remainders first; ties to the lower class index
        order = sorted(range(len(counts)), key=lambda c: (-(share[c] - take[c]).item(), c))
        for c in order[:rest]:
            take[c] += 1
    elif rest < 0:  # the minimum-one rule overshot: trim the largest classes
        for c in sorted(range(len(counts)), key=lambda c: -take[c].item())[:-rest]:
            take[c] -= 1
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, k in enumerate(take.tolist()):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    idx = torch.cat(chosen).sort().values
    if isinstance(ds, FolderDataset):
        return dataclasses.replace(ds, files=[ds.files[i] for i in idx.tolist()],
                                   labels=labels[idx])
    return dataclasses.replace(ds, images=ds.images[idx], labels=labels[idx])


def with_pixel_range(ds, low: float, high: float):
    """`ds` (ArrayDataset or FolderDataset) normalised by a fixed linear map, pixel 0 -> `low`
    and 255 -> `high`, instead of its train-split mean/std: LeNet-5's input (LeCun et al. 1998,
    sec. II-A: background -0.1, foreground 1.175, so the input has about zero mean and unit
    variance). Expressed as the (mean, std) the loaders apply: (x - mean) / std on [0, 1]."""
    if not high > low:
        raise UsageError(f"pixel range must rise from low to high, got [{low}, {high}]")
    std = 1.0 / (high - low)
    return dataclasses.replace(ds, mean=(-low * std,) * ds.channels, std=(std,) * ds.channels)


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and std (population) of uint8 images (N, C, H, W), in [0, 1] units."""
    x = torch.as_tensor(images)
    n, c = x.shape[:2]
    s1, s2 = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(4096):  # float64 sums in chunks: exact enough, bounded memory
        v = chunk.transpose(0, 1).reshape(c, -1).double()
        s1 += v.sum(1)
        s2 += (v * v).sum(1)
    count = n * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean**2).clamp(min=0).sqrt()
    return tuple(round(v / 255, 4) for v in mean.tolist()), tuple(
        round(v / 255, 4) for v in std.tolist())


def _sample_indices(n: int, limit: int = _STATS_SAMPLE) -> np.ndarray:
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int)


# ---- catalog datasets -------------------------------------------------------------------------

# Catalog splits decoded in this process, so that many small runs (experiments) decode once.
# Keyed by the files' identity too: a file replaced on disk is read again.
_DECODED: dict[tuple, ArrayDataset] = {}


def _load_catalog(spec: catalog.DatasetSpec, split: str, data_dir, download: bool):
    if split not in spec.split_sizes:
        raise UsageError(f"dataset {spec.name!r} has splits {', '.join(spec.split_sizes)}, "
                         f"not {split!r}")
    folder = catalog.ensure_dataset(spec.name, data_dir, download=download)
    stats = []
    for f in spec.files:
        st = (folder / f.name).stat()
        stats.append((str((folder / f.name).resolve()), st.st_size, st.st_mtime_ns,
                      st.st_ctime_ns, st.st_ino))
    key = (spec.name, split, tuple(stats))
    if key not in _DECODED:
        _DECODED[key] = _decode_catalog(spec, split, folder)
    return _DECODED[key]


def _decode_catalog(spec: catalog.DatasetSpec, split: str, folder: Path) -> ArrayDataset:
    if spec.format == "idx":
        prefix = "train" if split == "train" else "t10k"
        images, labels = formats.read_idx_pair(folder / f"{prefix}-images-idx3-ubyte.gz",
                                               folder / f"{prefix}-labels-idx1-ubyte.gz",
                                               len(spec.classes))
        classes = list(spec.classes)
    elif spec.format.startswith("cifar"):
        images, labels, classes = formats.read_cifar_archive(folder / spec.files[0].name,
                                                             spec.format, split)
    else:  # image archive: decoded once, then cached
        images, labels, classes = _cached_archive(spec, folder / spec.files[0].name, split)
    return ArrayDataset(spec.name, split, torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(labels), classes, spec.mean, spec.std, spec.hflip)


def decoded_cache_dir(spec: catalog.DatasetSpec) -> Path:
    """Where an image archive's decoded arrays live: keyed by the archive's checksum. The cache
    is read only after ensure_dataset has checked the archive's bytes against that checksum
    (verify_file), so the key is the content's own hash and another archive never reads it."""
    key = (spec.files[0].sha256 or spec.files[0].md5)[:16]
    return catalog.cache_dir() / "decoded" / f"{spec.name}-{key}"


def _cached_archive(spec: catalog.DatasetSpec, archive: Path, split: str):
    folder = decoded_cache_dir(spec)
    try:
        classes = (folder / "classes.txt").read_text().split("\n")
        images = np.load(folder / f"{split}-images.npy")  # plain arrays: allow_pickle=False
        labels = np.load(folder / f"{split}-labels.npy")
        if images.dtype != np.uint8 or images.shape[1:] != (spec.channels, spec.image_size,
                                                            spec.image_size) \
                or len(images) != spec.split_sizes[split] or classes != list(spec.classes) \
                or labels.shape != (len(images),) or labels.max(initial=0) >= len(classes) \
                or labels.min(initial=0) < 0:
            raise ValueError("the cache does not match the catalog entry")
        return images, labels, classes
    except FileNotFoundError:
        pass
    except (OSError, ValueError):  # a damaged cache is rebuilt, never trusted
        shutil.rmtree(folder, ignore_errors=True)
    decoded, classes = formats.read_image_archive(archive, spec.channels)
    if set(decoded) != set(spec.split_sizes):
        raise DatasetError(f"{archive}: splits {sorted(decoded)}, expected "
                           f"{sorted(spec.split_sizes)}")
    sizes = {s: len(lab) for s, (_, lab) in decoded.items()}
    if sizes != spec.split_sizes or classes != list(spec.classes):
        raise DatasetError(f"{archive}: {sizes} images in classes {classes}, but the catalog "
                           f"has {spec.split_sizes} in {list(spec.classes)}; not caching it")
    _write_cache(folder, {f"{s}-{kind}": arr for s, (im, lab) in decoded.items()
                          for kind, arr in (("images", im), ("labels", lab))}, classes)
    return *decoded[split], classes


def _write_cache(folder: Path, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
    """Write into a temp folder and rename it into place: readers see all files or none.
    Best effort: an unwritable cache only means decoding again next time."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as its parent
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", arr)
        (tmp / "classes.txt").write_text("\n".join(classes))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


# ---- image folders ----------------------------------------------------------------------------

def _folder_stats(root: Path, channels: int, size) -> tuple[tuple, tuple]:
    files = formats.list_image_folder(root, "train")[0]
    images = np.stack([formats.decode_image(files[i], channels, size)
                       for i in _sample_indices(len(files))])
    return channel_stats(images)


def _load_folder(root: Path, split: str, in_memory: bool, image_size, channels, strict: bool):
    files, labels, classes, split_name = formats.list_image_folder(root, split, strict)
    channels, size = formats.resolve_layout(root, channels, image_size)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    if not in_memory:
        mean, std = _folder_stats(root, channels, size)
        return FolderDataset(str(root), split_name, files, labels_t, classes, mean, std, True,
                             channels, size)
    images = np.stack([formats.decode_image(f, channels, size) for f in files])
    if split_name == "train":
        mean, std = channel_stats(images[_sample_indices(len(images))])
    else:
        mean, std = _folder_stats(root, channels, size)
    # hflip: a folder of arbitrary photos is assumed mirror-safe; pass an Augment to override
    return ArrayDataset(str(root), split_name, torch.from_numpy(images), labels_t, classes,
                        mean, std, True)


def load_dataset(name_or_path: str | os.PathLike, split: str = "train", data_dir=None,
                 download: bool = True, *, in_memory: bool = True,
                 image_size: int | tuple[int, int] | None = None,
                 channels: int | None = None, strict: bool = False
                 ) -> ArrayDataset | FolderDataset:
    """Load one split of a catalog dataset (`cnnlab data list`) or of an image folder
    (`<root>/train/<class>/<image>` plus `val/` or `test/`).

    Catalog files are found in `data_dir`, $CNNLAB_DATA or ~/.cache/cnnlab, downloaded if missing
    (when `download`) and checked against their published checksums. Folder images are decoded
    into memory at `image_size` (default: the most common size, others resized) with `channels`
    (default: 1 if every image is grey, else 3); `in_memory=False` returns a FolderDataset that
    decodes file by file (for `make_loader`'s DataLoader path). Folder files that are not
    images are skipped with a CnnlabWarning naming them, or refused with `strict`. Catalog
    datasets are always in memory (they are small) and keep their own size and channels: the
    loaders convert those.
    """
    text = os.fspath(name_or_path)
    if text in catalog.CATALOG:
        return _load_catalog(catalog.CATALOG[text], split, data_dir, download)
    path = Path(text).expanduser()
    if path.is_dir():
        if split not in ("train", "test", "val"):
            raise UsageError(f"split must be train, test or val, got {split!r}")
        return _load_folder(path, split, in_memory, image_size, channels, strict)
    if path.exists():
        raise UsageError(f"{path} is a file; a dataset is a catalog name or an image folder "
                         "(train/<class>/<image> plus val/ or test/)")
    catalog.get_spec(text)  # raises the UsageError listing the catalog and close matches
    raise AssertionError("unreachable")
