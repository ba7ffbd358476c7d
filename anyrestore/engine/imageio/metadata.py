"""What a photo carries besides its pixels: EXIF, XMP, IPTC, text, print resolution and
orientation.

EXIF is kept byte for byte with its orientation set upright in place; a TIFF's descriptive
tags and EXIF/GPS IFDs are read from its IFD0, and written by ``tiff_ifd``, which the TIFF
encoder and the EXIF of the other formats share.
"""

from __future__ import annotations

import logging
import re
import struct
from typing import Any

from PIL import Image, TiffImagePlugin, TiffTags

log = logging.getLogger("anyrestore")

PNG_XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword PNG readers look for
ORIENTATION = 0x0112


def pillow_turns(im: Image.Image, fmt: str) -> int:
    """The orientation Pillow applies itself as it loads a TIFF (and removes from its tags)."""
    if fmt != "TIFF":
        return 1
    try:
        return int(im.getexif().get(ORIENTATION, 1) or 1)
    except Exception:  # unreadable metadata must not cost the image
        return 1


#: Print resolutions outside this range are taken as damaged metadata (JPEG holds 1-65535).
_DPI_RANGE = (1.0, 65535.0)


def read_dpi(im: Image.Image, orientation: int) -> tuple[float, float] | None:
    """The file's print resolution, if it names one (a scan's 600 dpi), turned with the pixels."""
    try:
        x, y = (float(v) for v in im.info["dpi"])
    except (KeyError, TypeError, ValueError):
        return None
    low, high = _DPI_RANGE
    if not (low <= x <= high and low <= y <= high):
        return None
    return (y, x) if orientation in (5, 6, 7, 8) else (x, y)


#: The IFD0 tags of a TIFF that describe the photo rather than lay out its pixels (image
#: description, make, model, software, date, artist, copyright), and the pointers to the EXIF
#: and GPS sub-IFDs (camera settings, capture date, location): what a TIFF input carries to
#: the output and what a TIFF output takes from an input's EXIF.
_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_SUB_IFDS = (0x8769, 0x8825)
_IFD_NAMES = {0x8769: "EXIF", 0x8825: "GPS"}
_INTEROP_IFD = 0xA005  # inside the EXIF IFD: an offset into the old file, not carried


def _descriptive_exif(exif: Image.Exif) -> Image.Exif | None:
    """The descriptive tags and the EXIF and GPS IFDs of ``exif``, without layout tags."""
    out = Image.Exif()
    for tag in _DESCRIPTIVE_TAGS:
        if isinstance(exif.get(tag), (str, bytes)):
            out[tag] = _latin1(exif[tag])
    for tag in _SUB_IFDS:
        ifd = {k: v for k, v in exif.get_ifd(tag).items() if k != _INTEROP_IFD}
        if ifd:
            out[tag] = ifd
    return out if len(out) else None


#: The integer types an orientation may be stored as: SHORT, LONG, SSHORT, SLONG.
_ONE_INTEGER = {3: "H", 4: "I", 8: "h", 9: "i"}


def _tiff_header(raw: bytes) -> tuple[bytes, str, int, int | None] | None:
    """EXIF's TIFF structure (after an ``Exif\\0\\0`` prefix, if any), its byte order for
    ``struct``, the offset of its first IFD and that IFD's entry count, None where the IFD and
    its next-IFD offset do not fit in the data; None if it is not a TIFF structure at all."""
    tiff = raw[6:] if raw.startswith(b"Exif\0\0") else raw
    if tiff[:4] not in (b"II*\0", b"MM\0*") or len(tiff) < 8:
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    count = None
    if ifd + 2 <= len(tiff):
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        if ifd + 2 + 12 * count + 4 > len(tiff):
            count = None
    return tiff, order, ifd, count


def _upright_exif(raw: bytes) -> bytes | None:
    """``raw`` EXIF with its orientation set to 1 (upright) in place, no thumbnail (IFD1), and
    every other byte as it was; None if it is not a TIFF structure this can do that in.
    Serialized again by Pillow, text that is not ASCII (a copyright's ©, a name's ü) came out
    as '?' and maker notes moved from the offsets they point from."""
    header = _tiff_header(raw)
    if header is None or header[3] is None:
        return None
    tiff, order, ifd, count = header
    out = bytearray(tiff)
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack(order + "HHI", tiff[at : at + 8])
        if tag != ORIENTATION:
            continue
        if n != 1 or kind not in _ONE_INTEGER:  # not a value this can set in place
            return None
        out[at + 8 : at + 12] = struct.pack(order + _ONE_INTEGER[kind], 1).ljust(4, b"\0")
    end = ifd + 2 + 12 * count
    # No next IFD: IFD1 holds a thumbnail of the photo as it was (damaged, and sideways).
    out[end : end + 4] = bytes(4)
    return b"Exif\0\0" + bytes(out)  # with the header JPEG's writer expects (WebP's may lack it)


def exif_without_orientation(raw: bytes) -> bytes | None:
    """``raw`` EXIF with the orientation entry taken out of its first IFD, every other byte
    where it was (the freed entry left as padding); ``raw`` itself where the IFD cannot be
    read, None if it is not EXIF at all. For AVIF: Pillow turns an orientation tag into
    AVIF's own rotation boxes and serializes the rest again (text that is not ASCII becoming
    '?'), and writes an EXIF without one as it is; libavif refuses one with no TIFF header."""
    header = _tiff_header(raw)
    if header is None:
        return None
    tiff, order, ifd, count = header
    if count is None:
        return raw
    end = ifd + 2 + 12 * count + 4  # the entries and the next IFD's offset
    entries = [tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count)]
    kept = [e for e in entries if struct.unpack(order + "H", e[:2])[0] != ORIENTATION]
    if len(kept) == count:
        return raw
    body = struct.pack(order + "H", len(kept)) + b"".join(kept) + tiff[end - 4 : end]
    body += bytes(12 * (count - len(kept)))
    return raw[: len(raw) - len(tiff)] + tiff[:ifd] + body + tiff[end:]


def _text_bytes(text: str | bytes) -> bytes:
    """EXIF text as the bytes Pillow decoded it from (latin-1), to be written back as it was:
    Pillow encodes ``str`` values as ASCII, with '?' for the rest."""
    return text if isinstance(text, bytes) else text.encode("latin-1", "replace")


def _latin1(value: Any) -> Any:
    """``value`` with text that is not ASCII as its bytes (``_text_bytes``), for Pillow."""
    if isinstance(value, str) and not value.isascii():
        return _text_bytes(value)
    return value


_XMP_ORIENTATION = (  # one space before it (\s+ would try every start in a run of them)
    re.compile(rb"\stiff:Orientation\s*=\s*(\"[^\"]*\"|'[^']*')"),
    re.compile(rb"<tiff:Orientation>[^<]*</tiff:Orientation>"),
)


def read_xmp(im: Image.Image, orientation: int) -> bytes | None:
    """The photo's XMP packet (Lightroom's ratings, keywords, captions), carried as it is but
    for its orientation where one was applied to the pixels: the output is upright, and a
    viewer that reads XMP would turn it again."""
    xmp = im.info.get("xmp") or im.info.get(PNG_XMP_KEY)  # the latter: a PNG's tEXt/zTXt
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp:
        return None
    if orientation > 1:
        for pattern in _XMP_ORIENTATION:
            xmp = pattern.sub(b"", xmp)
    return xmp


def _avif_exif(im: Image.Image) -> bytes | None:
    """An AVIF's EXIF as stored. Where its rotation boxes and its EXIF orientation differ (or
    the EXIF has none), Pillow's info holds its own serialization instead, with the boxes'
    orientation (which ``getexif`` still gives) but text that is not ASCII as '?' and maker
    notes moved; the decoder Pillow keeps (not public) still has the stored bytes."""
    try:
        stored = im._decoder.get_info()[4]  # type: ignore[attr-defined]  # noqa: SLF001
    except Exception:  # another Pillow: what it gives is what there is
        return im.info.get("exif")
    return stored if isinstance(stored, bytes) and stored else None


def orientation_and_exif(im: Image.Image, fmt: str) -> tuple[int, bytes | None]:
    """The EXIF orientation, and EXIF bytes to carry (a TIFF's descriptive tags only)."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(ORIENTATION, 1) or 1)
        if fmt == "TIFF":
            carried = _descriptive_exif(exif)
            return (orientation if 1 <= orientation <= 8 else 1), (
                _exif_bytes(carried) if carried is not None else None
            )
        raw = _avif_exif(im) if fmt == "AVIF" else im.info.get("exif")
        if not raw:
            return (orientation if 1 <= orientation <= 8 else 1), None
        upright = _upright_exif(raw) if isinstance(raw, bytes) else None
        if upright is None:  # not a plain TIFF structure: Pillow writes what it understood
            if ORIENTATION in exif:
                del exif[ORIENTATION]
            upright = exif.tobytes()
        return (orientation if 1 <= orientation <= 8 else 1), upright
    except Exception:  # unreadable metadata must not cost the image
        return 1, None


def tiff_exif(exif: bytes | None) -> Image.Exif | None:
    """What of an image's EXIF a TIFF output takes: its own layout and resolution tags win."""
    if not exif:
        return None
    try:
        loaded = Image.Exif()
        loaded.load(exif)
        return _descriptive_exif(loaded)
    except Exception:  # unreadable metadata must not cost the image
        log.warning("the EXIF data could not be read; the TIFF output drops it")
        return None


def _sub_ifd(code: int, values: dict[int, Any], at: int) -> bytes | None:
    """An EXIF or GPS IFD as it stands at offset ``at`` of a little-endian TIFF, or None (with
    a warning) where Pillow cannot write one of its values."""
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II", group=code)
        for key, value in values.items():
            if isinstance(value, str):  # text as the bytes it was read from, typed as text
                ifd.tagtype[key] = TiffTags.ASCII
                value = _text_bytes(value)
            ifd[key] = value
        return ifd.tobytes(at)
    except (
        Exception
    ):  # a value of a type TIFF has no name for: the metadata must not cost the image
        log.warning(
            "the %s tags could not be written; the TIFF output drops them", _IFD_NAMES[code]
        )
        return None


def _exif_bytes(exif: Image.Exif) -> bytes:
    """EXIF for a PNG, JPEG or WebP output, laid out as the TIFF encoder lays out its own tags
    (Pillow's ``Exif.tobytes`` writes text that is not ASCII as '?')."""
    return b"Exif\0\0" + b"II*\x00" + struct.pack("<I", 8) + tiff_ifd([], exif, 8)


def tiff_ifd(
    tags: list[tuple[int, int, bytes, int]], exif: Image.Exif | None, ifd_at: int
) -> bytes:
    """A little-endian IFD at offset ``ifd_at``: ``tags`` (code, type, value bytes, count),
    ``exif``'s descriptive tags and its EXIF and GPS IFDs, then the values too long for an
    entry and the sub-IFDs, each where its offset says."""
    tags = list(tags)
    subs = {}
    if exif is not None:
        for code in _DESCRIPTIVE_TAGS:
            if code in exif:
                text = _text_bytes(exif[code]).rstrip(b"\0") + b"\0"
                tags.append((code, 2, text, len(text)))
        subs = {code: exif[code] for code in _SUB_IFDS if code in exif}
        subs = {code: ifd for code, ifd in subs.items() if _sub_ifd(code, ifd, 0) is not None}
        for code in subs:  # the sub-IFD's offset, known once the values are placed
            tags.append((code, 4, bytes(4), 1))
    tags.sort()
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    sub_at = extra_at + sum(len(v) + (len(v) & 1) for _, _, v, _ in tags if len(v) > 4)
    blobs = []
    for code, values in subs.items():
        blob = _sub_ifd(code, values, sub_at) or b""
        blob += b"\0" * (len(blob) & 1)
        tags = [(c, k, struct.pack("<I", sub_at) if c == code else v, n) for c, k, v, n in tags]
        blobs.append(blob)
        sub_at += len(blob)
    ifd, extra = [struct.pack("<H", len(tags))], bytearray()
    for code, kind, value, count in tags:
        if len(value) <= 4:
            ifd.append(struct.pack("<HHI", code, kind, count) + value.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", code, kind, count, extra_at + len(extra)))
            extra += value + b"\0" * (len(value) & 1)
    ifd.append(struct.pack("<I", 0))
    return b"".join([*ifd, bytes(extra), *blobs])


#: IPTC-NAA records (IIM: caption, byline, copyright, keywords) in a TIFF, and their
#: Photoshop image resource in a JPEG's APP13 segment.
IPTC_TAG = 33723
_IPTC_RESOURCE = 0x0404
_APP13_HEAD = b"Photoshop 3.0\0"
#: The payload one JPEG segment holds (its length field counts itself too).
JPEG_SEGMENT = 65533
#: The longest IPTC block one APP13 segment holds: less its header and the resource's (26),
#: less the byte that pads an odd length.
JPEG_MAX_IPTC = JPEG_SEGMENT - 26 - 1


def read_iptc(im: Image.Image, fmt: str) -> bytes | None:
    """The photo's IPTC-NAA records, as they are (no other Photoshop resource: those hold a
    thumbnail of the damaged photo, among others)."""
    try:
        if fmt == "JPEG":
            data = _photoshop_resource(im, _IPTC_RESOURCE)
        elif fmt == "TIFF":
            # The tag's bytes as stored: Photoshop types it LONG, which Pillow's decoded value
            # cuts to its first number (the tag is declared to hold one)
            data = getattr(getattr(im, "tag_v2", None), "_tagdata", {}).get(IPTC_TAG)
        else:
            return None
        if not isinstance(data, (bytes, bytearray)):
            return None
        data = bytes(data)
        if data[:1] != b"\x1c" and data[3:4] == b"\x1c" and not len(data) % 4:
            # stored as LONGs byte-swapped (a known writer's fault): put each four back
            data = b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))
        records = _whole_records(data)
        if data and not records:
            log.warning("the IPTC data could not be read; the output drops it")
        return records or None
    except Exception:  # unreadable metadata must not cost the image
        return None


def _photoshop_resource(im: Image.Image, code: int) -> bytes | None:
    """A JPEG's Photoshop resource ``code`` (the last, if there are several), from its APP13
    segments read as one stream: a writer whose resources (a thumbnail and the IPTC, say)
    outgrow one segment goes on in the next, which Pillow parses on its own, so a resource
    that spans two came out cut short. Where the stream does not parse that way (a segment
    that ends in padding or a bad size), what Pillow read segment by segment."""
    stream = b"".join(
        body[len(_APP13_HEAD) :]
        for marker, body in getattr(im, "applist", [])
        if marker == "APP13" and body.startswith(_APP13_HEAD)
    )
    at, found = 0, None
    while at + 7 <= len(stream) and stream[at : at + 4] == b"8BIM":
        (kind,) = struct.unpack(">H", stream[at + 4 : at + 6])
        name = stream[at + 6]  # a Pascal string, its length byte included, padded to even
        at += 6 + 1 + name + (name + 1) % 2
        if at + 4 > len(stream):
            break
        (size,) = struct.unpack(">I", stream[at : at + 4])
        at += 4
        if kind == code:
            found = stream[at : at + size]  # cut short only where the file ends inside it
        at += size + size % 2
    if found is None:
        found = im.info.get("photoshop", {}).get(code)
    return found


def _whole_records(data: bytes) -> bytes:
    """``data`` to the end of its last whole IPTC record: without one cut short (a file that
    ends inside it) or the padding after the records (a LONG-typed TIFF tag holds a multiple
    of four bytes)."""
    at = 0
    while at + 5 <= len(data) and data[at] == 0x1C:
        (size,) = struct.unpack(">H", data[at + 3 : at + 5])
        head = 5
        if size & 0x8000:  # an extended dataset: its length in the next (size & 0x7FFF) bytes
            head += size & 0x7FFF
            size = int.from_bytes(data[at + 5 : at + head], "big")
        if at + head + size > len(data):
            break
        at += head + size
    return data[:at]


def jpeg_app13(iptc: bytes) -> bytes:
    """A JPEG APP13 segment holding ``iptc`` as Photoshop's IPTC resource (8BIM 0x0404)."""
    body = iptc + b"\0" * (len(iptc) & 1)
    payload = (
        _APP13_HEAD
        + b"8BIM"
        + struct.pack(">HHI", _IPTC_RESOURCE, 0, len(iptc))  # no name (a 0 and a pad byte)
        + body
    )
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


#: The longest XMP packet one APP1 segment holds (less its namespace, 29 bytes).
JPEG_MAX_XMP = JPEG_SEGMENT - len(b"http://ns.adobe.com/xap/1.0/\0")


#: PNG text that repeats what is carried on its own and could undo it (lower case): copies of
#: the EXIF with its orientation (ImageMagick's raw profiles, and a chunk named "exif", which
#: Pillow reads as the EXIF), of the XMP and ICC profile, and Photoshop resources (a
#: thumbnail of the damaged photo).
_PNG_COPIES = frozenset(
    ["exif", PNG_XMP_KEY.lower()]
    + [f"raw profile type {kind}" for kind in ("exif", "app1", "xmp", "icc", "icm", "8bim")]
)
#: The keyword of a PNG text chunk that a JPEG's comment (COM segment) becomes, and back.
COMMENT_KEY = "Comment"
#: The longest comment one COM segment holds.
JPEG_MAX_COMMENT = JPEG_SEGMENT


def read_text(im: Image.Image, fmt: str) -> tuple[tuple[str, str], ...]:
    """A PNG's text chunks (title, author, description, copyright...) and a JPEG's comment,
    as (keyword, text) pairs; XMP is carried on its own. A comment's bytes that are not
    UTF-8 are kept as surrogate escapes (``utf8``), so that a JPEG output holds them as they
    were."""
    try:
        if fmt == "JPEG":
            comment = im.info.get("comment")
            if isinstance(comment, bytes):
                comment = comment.rstrip(b"\0").decode("utf-8", "surrogateescape")
            return ((COMMENT_KEY, comment),) if isinstance(comment, str) and comment else ()
        if fmt == "PNG":
            return tuple(
                (str(key), str(value))
                for key, value in getattr(im, "text", {}).items()
                if str(key).lower() not in _PNG_COPIES
            )
    except Exception:  # unreadable metadata must not cost the image
        pass
    return ()


def _escaped(char: str) -> bool:
    return 0xDC80 <= ord(char) <= 0xDCFF  # a byte that was not UTF-8 (surrogateescape)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, with the bytes a JPEG comment held that were not UTF-8 as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of another kind too (from a caller's string)
        return b"".join(
            bytes([ord(c) - 0xDC00]) if _escaped(c) else c.encode("utf-8", "replace") for c in text
        )


def jpeg_comment(text: tuple[tuple[str, str], ...]) -> bytes:
    """The Comment of ``text`` (an ImageData's) as a JPEG comment's bytes; b"" if none."""
    return utf8(next((value for key, value in text if key == COMMENT_KEY), ""))


def plain_text(text: str) -> str:
    """``text`` for a format that holds only text: each byte of a comment that was not UTF-8
    read as Windows-1252 (else latin-1), what such bytes usually are."""

    def char(c: str) -> str:
        byte = bytes([ord(c) - 0xDC00])
        try:
            return byte.decode("cp1252")
        except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
            return byte.decode("latin-1")

    return "".join(char(c) if _escaped(c) else c for c in text)
