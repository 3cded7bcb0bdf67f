"""Reading image files into arrays, with one clear error for each kind of bad file."""

import io
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iic.errors import IICError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Modes PIL converts losslessly enough to 8-bit L/RGB. 16-bit greyscale (and PGM, which PIL reads as I, 0–65535)
# is scaled from 0–65535 to 0–255; 32-bit and float images have no range to scale from that we could trust.
CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"}
SIXTEEN_BIT_GREY_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted), or an error when there is no such folder or it has none.

    With ``recursive`` also those in sub-folders, following linked folders (each real folder once) as a class
    folder of ``image_folder`` is followed; hidden files and folders (e.g. .ipynb_checkpoints) are skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise IICError(f"no such file or directory: {folder}")
    if not folder.is_dir():
        raise IICError(f"not a directory: {folder}")
    files: list[Path] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []  # the same order anywhere
        files.extend(p for p in map(Path(root).joinpath, names) if is_image_file(p) and p.is_file())
    if not files:
        raise IICError(f"no images found in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(files)


def expand_image_paths(paths: list[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files and folders (their images, sorted; with ``recursive`` also those in sub-folders) given on a command
    line, as one list of image files."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(list_image_files(path, recursive))
        elif path.is_file():
            files.append(path)
        else:
            raise IICError(f"no such file or directory: {path}")
    if not files:
        raise IICError("no images given")
    return files


def ignore_damaged_metadata_warnings() -> None:
    """PIL reads what it can of damaged EXIF metadata and warns (its TIFF tag reader, and "Possibly corrupt EXIF
    MakerNote data"); the pixels are fine, so no warning reaches the user."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
    warnings.filterwarnings("ignore", r"(Possibly c|C)orrupt EXIF", UserWarning)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, turning PIL's failures into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise IICError(f"no such image file: {path}")
    try:
        with warnings.catch_warnings():  # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            ignore_damaged_metadata_warnings()
            # Decoded from memory: a damaged chunk length can make PIL read gigabytes at once, and a read from a
            # file allocates what it asks for before finding the file short; a read from memory does not.
            with Image.open(io.BytesIO(path.read_bytes())) as image:
                image.load()
                decoded = image.copy()
                decoded.format = image.format  # which a copy drops: a PGM's 16 bits are told by it
                return decoded
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IICError(f"cannot read image {path}: too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IICError(f"cannot read image {path}: corrupt or not an image ({exc.__class__.__name__})") from None


def upright_image(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says; as stored when that metadata is damaged beyond reading."""
    with warnings.catch_warnings():
        ignore_damaged_metadata_warnings()
        try:
            return ImageOps.exif_transpose(image)
        except (SyntaxError, ValueError, OSError, KeyError, TypeError, struct.error):  # PIL's EXIF parser fails so
            return image


def load_image(path: str | os.PathLike, channels: int, size: tuple[int, int] | None = None,
               upright: bool = True) -> np.ndarray:
    """An image file as uint8 H × W × channels (1 = greyscale, 3 = RGB), optionally resized to ``size`` (h, w).

    ``upright``: turned as its EXIF orientation says, as viewers show it (a phone photo stored sideways);
    False keeps the stored pixels, which label maps drawn on them match."""
    image = open_image(path)
    sixteen_bit = image.mode in SIXTEEN_BIT_GREY_MODES or (image.mode == "I" and image.format == "PPM")
    if upright:
        image = upright_image(image)
    if sixteen_bit:
        image = Image.fromarray(np.rint(np.asarray(image, dtype=np.float32) / 257).astype(np.uint8))
    if image.mode not in CONVERTIBLE_MODES:
        raise IICError(f"unsupported image mode {image.mode!r} in {path}: expected a greyscale (8 or 16 bits), "
                       f"palette or colour image")
    if channels not in (1, 3):
        raise IICError(f"cannot load {path} with {channels} channels: images load as 1 (greyscale) or 3 (RGB)")
    if image.mode == "P" and "transparency" in image.info:  # PIL warns when converting these straight to L/RGB
        image = image.convert("RGBA")
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def load_label_map(path: str | os.PathLike) -> np.ndarray:
    """A label-map PNG (one class id per pixel) as uint8 H × W."""
    image = open_image(path)
    if image.mode == "P" or image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "I;16" or image.mode == "I":
        array = np.asarray(image)
        if array.max(initial=0) > 255:
            raise IICError(f"label map {path} has class ids above 255")
        return array.astype(np.uint8)
    raise IICError(f"label map {path} has mode {image.mode!r}: expected a single-channel (L or P) image of class ids")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename, so that a power cut leaves the old file or the new
        os.replace(tmp, path)
    except OSError as exc:
        raise IICError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def check_writable(path: str | os.PathLike, kind: str = "file") -> None:
    """Fail now, before any work, if ``path`` (a file, or a folder when ``kind`` is "folder") cannot be written:
    its nearest existing ancestor must be a writable folder, and a file must not be an existing folder."""
    if not str(path).strip():  # Path("") is ".", which would pass as the current folder
        raise IICError(f"the output {kind} name is empty")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise IICError(f"{path} is a directory: give a file name")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise IICError(f"{path} is a file, not a directory")
    ancestor = path if kind == "folder" else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # exists() follows links: a broken one would fail only at the write
            raise IICError(f"cannot write {path}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise IICError(f"cannot write {path}: {ancestor} is a file, not a directory")
    try:  # a real file, not os.access: permissions alone miss read-only and virtual file systems (and root)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise IICError(f"cannot write {path}: {ancestor} is not writable ({exc.strerror or exc})") from None


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
