"""A hostile landing folder, generated in a second or two, and what ingest must do with it.

Every entry is a way a landing folder can hurt a batch ingest: names that are not UTF-8, hold
newlines, console markup or 255 bytes; links out of the folder, link loops, FIFOs, sockets and
devices; folder names that are not labels; media whose headers claim huge frames, absurd frame
rates, days of duration in a kilobyte or a thousand streams (the "zip bombs" of media); a sparse
file far over the size limit; empty, truncated and disguised files. Good tiny files sit among
them and must come through.

:func:`write_hostile_corpus` writes it in the landing layout (``labelled/<label>/...`` is
labelled) and returns one :class:`Expected` per case; the ingest tests and
``bench/hostile_ingest.py`` share it. Ingest it with :data:`CORPUS_SETTINGS`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import soundfile

from tests.media_factory import colour_video, corrupt_file, tone_file

#: Settings the corpus is built for: the sparse file is over this size limit.
CORPUS_SETTINGS: dict[str, Any] = {"max_file_bytes": 10 * 1024**2}
SPARSE_BYTES = 50 * 1024**2

#: What ingest does with an entry: registered as an ok clip; registered as quarantined;
#: refused (never opened; counted in ``refused``); skipped by its name (counted in
#: ``skipped_unsupported``); hidden (a hidden or temporary name, left out silently);
#: unreadable (no row; counted in ``unreadable``).
Outcome = Literal["ok", "quarantined", "refused", "skipped", "hidden", "unreadable"]

LABEL_RULE_BROKEN = "is not a valid label"
MARKUP_NAME = "odd [/bold]/x.mp4"
#: Terminal control sequences (set the window title, clear the screen) as a file name.
TERMINAL_NAME = "\x1b]0;owned\x07\x1b[2J.mp4"


@dataclass(frozen=True)
class Expected:
    """What ingest must do with one corpus entry.

    ``path`` is the entry as discovery lists it (undecodable bytes as surrogates, like
    ``os.scandir``). ``reason`` must appear in the quarantine error or the refusal reason (""
    = any reason). ``label`` is the label an ok file must get. ``stored_name`` is the last path
    component as the warehouse must store it, where escaping matters. ``copied`` is False for
    a quarantined file that must not even be read (its ``media_uri`` stays NULL).
    """

    path: str
    outcome: Outcome
    reason: str = ""
    label: str | None = None
    stored_name: str | None = None
    copied: bool = True


class _Corpus:
    """Writes entries under ``root`` and records what each must become."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: dict[str, Expected] = {}
        self._tones = 0

    def path(self, rel: str | bytes) -> Path:
        """``root / rel``; ``rel`` as bytes may hold any byte but '/' and NUL."""
        name = os.fsdecode(rel)
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, case: str, path: Path, outcome: Outcome, **details: Any) -> None:
        if case in self.cases:
            raise ValueError(f"two corpus cases named {case!r}")
        self.cases[case] = Expected(str(path), outcome, **details)

    def tone(self, rel: str | bytes) -> Path:
        """A quarter second of a tone no other corpus file has (so every file is its own
        clip, and a quarantine reason is about that file)."""
        self._tones += 1
        path = self.path(rel)
        scratch = self.root / ".writing.wav"  # soundfile cannot open undecodable names
        tone_file(scratch, seconds=0.25, freq=200.0 + 37.0 * self._tones, sample_rate=8000)
        return scratch.replace(path)

    def video(self, rel: str | bytes, shade: int) -> Path:
        path = self.path(rel)
        scratch = self.root / ".writing.mp4"
        colour_video(scratch, [(shade, 255 - shade, 90)], frames_each=2, fps=4)
        return scratch.replace(path)


def write_hostile_corpus(root: Path, outside: Path) -> dict[str, Expected]:
    """Write the hostile corpus under ``root`` (a landing folder) and files it links to under
    ``outside`` (a folder beside it, not inside). Returns ``{case: Expected}``.

    Cases that need privileges the process lacks (a device node needs root, an unreadable
    file needs not to be root) are left out.
    """
    corpus = _Corpus(root)
    for writer in (
        _good_files,
        _hostile_names,
        _bad_labels,
        _special_entries,
        _cost_limits,
        _broken_media,
        _skipped_names,
    ):
        writer(corpus)
    _links(corpus, outside)
    return corpus.cases


def _good_files(c: _Corpus) -> None:
    c.add("good_wav", c.tone("good/tone.wav"), "ok")
    c.add("good_mp4", c.video("good/colour.mp4", 40), "ok")
    c.add("good_labelled", c.tone("labelled/beep/a.wav"), "ok", label="beep")
    c.add("label_with_dots", c.tone("labelled/v1.2_x-y/a.wav"), "ok", label="v1.2_x-y")
    c.add("label_64_chars", c.tone(f"labelled/{'L' * 64}/a.wav"), "ok", label="L" * 64)
    duplicate = c.path("good/same_bytes_again.wav")
    shutil.copyfile(c.root / "good/tone.wav", duplicate)
    c.add("duplicate_content", duplicate, "ok")
    hard = c.path("good/hard_link.wav")
    os.link(c.root / "good/colour.mp4", hard)  # mp4 bytes under a .wav name: content decides
    c.add("hard_link", hard, "ok")
    c.add("folder_named_like_media", c.tone("folder.mp4/inner.wav"), "ok")
    c.add("upper_case_extension", c.tone("good/LOUD.WAV"), "ok")
    c.add("deep_folders", c.tone("/".join(["d"] * 60) + "/deep.wav"), "ok")


def _hostile_names(c: _Corpus) -> None:
    c.add(
        "name_not_utf8",
        c.tone(b"names/bad_\xff\xfe_name.wav"),
        "ok",
        stored_name="bad_\\xff\\xfe_name.wav",
    )
    # The escaped form of the name above, as a real name: escaping must keep them apart.
    c.add(
        "name_looks_escaped",
        c.tone("names/bad_\\xff\\xfe_name.wav"),
        "ok",
        stored_name="bad_\\\\xff\\\\xfe_name.wav",
    )
    c.add(
        "name_with_backslash",
        c.tone("names/back\\slash.wav"),
        "ok",
        stored_name="back\\\\slash.wav",
    )
    c.add("name_with_newline", c.tone("names/new\nline.wav"), "ok", stored_name="new\nline.wav")
    c.add("name_255_bytes", c.tone("names/" + "n" * 251 + ".wav"), "ok")
    c.add("name_255_bytes_utf8", c.tone("names/" + "é" * 125 + "x.wav"), "ok")
    c.add("name_dash_rf", c.tone("names/-rf.wav"), "ok", stored_name="-rf.wav")
    c.add("name_dash_help", c.video("names/--help.mp4", 120), "ok", stored_name="--help.mp4")
    c.add("name_sql_quote", c.tone("names/x'); DROP TABLE media_files; --.wav"), "ok")
    c.add("name_format_strings", c.tone("names/%s %(message)s {0} %n.wav"), "ok")
    c.add("name_terminal_escape", c.tone("names/\x1b[31mred\x1b[0m\x07.wav"), "ok")
    c.add("name_rtl_override", c.tone("names/evil\u202ev4m.wav"), "ok")
    # Console markup: '[/bold]' closes a tag never opened, which rich refuses to render. A
    # corrupt file, so that `stpipe status` lists it among the quarantined ('!' sorts first).
    markup = corrupt_file(c.path(f"!markup/{MARKUP_NAME}"), size=600, seed=7)
    c.add("name_with_console_markup", markup, "quarantined", reason="Invalid data")
    shout = corrupt_file(c.path(f"!terminal/{TERMINAL_NAME}"), size=500, seed=8)
    c.add("name_with_terminal_controls", shout, "quarantined", reason="Invalid data")


def _bad_labels(c: _Corpus) -> None:
    for case, folder in (
        ("label_with_space_and_bang", b"bad label!"),
        ("label_with_newline", b"two\nlines"),
        ("label_sql_injection", b"x'; DROP TABLE media_files; --"),
        ("label_200_chars", b"a" * 200),
        ("label_65_chars", b"L" * 65),
        ("label_leading_dash", b"-rf"),
        ("label_not_ascii", "café".encode()),
        ("label_not_utf8", b"\xff\xfe"),
        ("label_console_markup", b"[bold]x[/bold]"),
    ):
        path = c.tone(b"labelled/" + folder + b"/x.wav")
        c.add(case, path, "quarantined", reason=LABEL_RULE_BROKEN)


def _special_entries(c: _Corpus) -> None:
    """FIFOs, sockets and devices with media names: refused unopened."""
    fifo = c.path("special/pipe.wav")
    os.mkfifo(fifo)
    c.add("fifo", fifo, "refused", reason="named pipe")
    sock = c.path("special/socket.mp4")
    with contextlib.chdir(sock.parent), socket.socket(socket.AF_UNIX) as server:
        server.bind(sock.name)  # a relative name: AF_UNIX paths may be only 108 bytes
    c.add("socket", sock, "refused", reason="socket")
    device = c.path("special/zero.wav")
    try:
        os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
    except PermissionError:
        pass  # needs root (and CAP_MKNOD)
    else:
        c.add("character_device", device, "refused", reason="character device")
    if os.geteuid() != 0:  # root reads any file
        locked = c.tone("special/locked.wav")
        locked.chmod(0)
        c.add("unreadable_permissions", locked, "unreadable")


def outside_wav(outside: Path) -> Path:
    """A valid WAV outside the folder being ingested (content no corpus file has)."""
    path = outside / "good.wav"
    if not path.exists():
        tone_file(path, seconds=0.25, freq=3000.0, sample_rate=8000)
    return path


def _links(c: _Corpus, outside: Path) -> None:
    if outside.resolve().parent != c.root.resolve().parent:
        raise ValueError(f"{outside} must be a sibling of {c.root} (a relative link uses it)")
    good_outside = outside_wav(outside)
    links = {
        "link_to_etc_passwd": ("links/passwd.wav", "/etc/passwd", "outside"),
        "link_to_good_wav_outside": ("links/outside.wav", str(good_outside), "outside"),
        "link_to_dev_zero": ("links/zero.wav", "/dev/zero", "outside"),
        "link_to_folder_outside": ("links/etc.mp4", "/etc", "outside"),
        "link_relative_out": ("links/up.wav", "../../" + outside.name + "/good.wav", "outside"),
        "link_chain_out": ("links/chain.wav", "passwd.wav", "outside"),
        "link_broken": ("links/broken.wav", "no_such_file.wav", "broken link"),
        "link_loop": ("links/loop_a.wav", "loop_b.wav", "broken link"),
        "link_loop_partner": ("links/loop_b.wav", "loop_a.wav", "broken link"),
        "link_to_itself": ("links/self.wav", "self.wav", "broken link"),
        "link_to_folder_inside": ("links/good.mp4", "../good", "a link to a folder"),
        "link_to_fifo_inside": ("links/pipe.wav", "../special/pipe.wav", "named pipe"),
    }
    for case, (rel, target, reason) in links.items():
        link = c.path(rel)
        link.symlink_to(target)
        c.add(case, link, "refused", reason=reason)
    inside = c.path("links/inside.wav")
    inside.symlink_to("../good/tone.wav")
    c.add("link_inside_to_regular_file", inside, "ok")


def _cost_limits(c: _Corpus) -> None:
    """Media whose claims are over a limit: quarantined, naming the setting."""
    limits: dict[str, tuple[str, Callable[[Path], object], str]] = {
        "frames_8192x8192": ("limits/huge.mp4", _huge_frames, "PIPELINE_MAX_FRAME_PIXELS"),
        "wav_1_hz": ("limits/one_hz.wav", lambda p: _wav(p, rate=1), "PIPELINE_MIN_SAMPLE_RATE"),
        "wav_2_ghz": (
            "limits/two_ghz.wav",
            lambda p: _wav(p, rate=2**31 - 1),
            "PIPELINE_MAX_SAMPLE_RATE",
        ),
        "video_1000_s_in_1_kb": (
            "limits/span.mp4",
            lambda p: _two_frames_apart(p, 1000),
            "PIPELINE_MIN_BYTES_PER_SECOND",
        ),
        "video_1000_s_no_duration_header": (
            "limits/span_unseekable.mkv",
            lambda p: _two_frames_apart(p, 1000, seekable=False),
            "PIPELINE_MIN_BYTES_PER_SECOND",
        ),
        "video_28_hours": (  # 11 days would overflow MP4's 32-bit durations
            "limits/long.mp4",
            lambda p: _two_frames_apart(p, 10**5),
            "PIPELINE_MAX_DURATION_SECONDS",
        ),
        "video_11_days_no_duration_header": (
            "limits/long_unseekable.mkv",
            lambda p: _two_frames_apart(p, 10**6, seekable=False),
            "PIPELINE_MAX_DURATION_SECONDS",
        ),
        "flac_claims_2_years": (
            "limits/forever.flac",
            _flac_claiming_forever,
            "PIPELINE_MAX_DURATION_SECONDS",
        ),
        "fps_1_million": ("limits/fast.mp4", _absurd_frame_rate, "PIPELINE_MAX_FPS"),
        "streams_1000": ("limits/streams.mkv", _many_streams, "PIPELINE_MAX_STREAMS"),
    }
    for case, (rel, write, limit) in limits.items():
        path = c.path(rel)
        write(path)
        c.add(case, path, "quarantined", reason=limit)
    # The header and the first frame are 64x64; frame 13 is 8192x8192. Probing reads the
    # claims and the first frame, so ingest accepts it; decoding must refuse the big frame.
    c.add("frames_grow_mid_stream", _resolution_switch(c.path("limits/grows.mkv")), "ok")
    sparse = c.path("limits/sparse.mp4")
    with sparse.open("wb") as handle:
        handle.truncate(SPARSE_BYTES)
    c.add("sparse_50_mb", sparse, "quarantined", reason="PIPELINE_MAX_FILE_BYTES", copied=False)


def _broken_media(c: _Corpus) -> None:
    """Files that are not decodable media: quarantined with the decoder's reason."""
    empty = c.path("broken/empty.mp4")
    empty.write_bytes(b"")
    c.add("empty_file", empty, "quarantined", reason="0 bytes")
    truncated = c.path("broken/truncated.mp4")
    whole = colour_video(c.path("broken/.whole.mp4"), [(10, 200, 30)] * 3)
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    c.add("truncated_mp4", truncated, "quarantined")
    text = c.path("broken/readme.mp4")
    text.write_text("This is not a video.\n" * 40)
    c.add("text_as_mp4", text, "quarantined")
    c.add("random_bytes_mkv", corrupt_file(c.path("broken/noise.mkv"), seed=3), "quarantined")
    for case, rel, kwargs in (
        ("wav_0_hz", "broken/zero_hz.wav", {"rate": 0}),
        ("wav_65535_channels", "broken/channels.wav", {"rate": 8000, "channels": 65535}),
        ("wav_0_bits", "broken/zero_bits.wav", {"rate": 8000, "bits": 0}),
    ):
        c.add(case, _wav(c.path(rel), **kwargs), "quarantined")
    header_only = c.path("broken/header_only.wav")
    _wav(header_only, rate=8000, data_bytes=0)
    c.add("wav_header_without_samples", header_only, "quarantined")


def _skipped_names(c: _Corpus) -> None:
    entries: tuple[tuple[str, str, Outcome], ...] = (
        ("not_media_by_name", "skip/notes.txt", "skipped"),
        ("no_extension", "skip/README", "skipped"),
        ("hidden_file", "skip/.hidden.mp4", "hidden"),
        ("temporary_name", "skip/x.tmp-123.wav", "hidden"),
    )
    for case, rel, outcome in entries:
        path = c.tone(rel) if rel.endswith(".wav") else c.path(rel)
        if not path.exists():
            path.write_bytes(b"not media")
        c.add(case, path, outcome)


#: Labels a manifest must refuse (with a ConfigError naming the line).
BAD_MANIFEST_LABELS = {
    "space_and_bang": "bad label!",
    "newline": "two\nlines",
    "sql_injection": "x'; DROP TABLE media_files; --",
    "200_chars": "a" * 200,
    "console_markup": "[/bold]",
    "not_ascii": "café",
}


def write_hostile_manifest(
    folder: Path, landing: Path, outside: Path
) -> tuple[Path, dict[str, Expected]]:
    """A manifest CSV in ``folder`` whose rows point inside ``folder`` and ``landing`` (to be
    ingested) and out of both (to be refused unread). ``folder``, ``landing`` and ``outside``
    must be siblings. Returns the manifest and ``{case: Expected}``; ``Expected.reason`` of a
    refused row names its line. The file of case ``manifest_deleted_later`` is for deleting
    between two runs.
    """
    c = _Corpus(folder)
    c.tone("good.wav")
    landed = _Corpus(landing).tone("inbox/landed.wav")
    c.tone("deleted.wav")
    c.tone("sub/new\nline.wav")
    c.path("notes.txt").write_text("not media\n")
    os.mkfifo(c.path("pipe.wav"))
    c.path("link_out.wav").symlink_to(outside_wav(outside))
    c.path("zero.wav").symlink_to("/dev/zero")
    rows: list[tuple[str, str, str, Outcome, str]] = [
        ("manifest_good", "good.wav", "beep", "ok", ""),
        ("manifest_into_landing", str(landed), "", "ok", ""),
        ("manifest_dot_dot_out", f"../{outside.name}/good.wav", "", "refused", "outside"),
        ("manifest_absolute_out", str(outside / "good.wav"), "", "refused", "outside"),
        (
            "manifest_dot_dot_out_of_landing",
            f"{landing}/../{outside.name}/good.wav",
            "",
            "refused",
            "outside",
        ),
        ("manifest_link_out", "link_out.wav", "", "refused", "outside"),
        ("manifest_link_to_dev_zero", "zero.wav", "", "refused", "outside"),
        ("manifest_etc_hostname", "../" * 40 + "etc/hostname", "", "refused", "outside"),
        ("manifest_etc_passwd", "/etc/passwd", "", "refused", "outside"),
        ("manifest_not_media", "notes.txt", "", "skipped", ""),
        ("manifest_fifo", "pipe.wav", "", "unreadable", "named pipe"),
        ("manifest_deleted_later", "deleted.wav", "", "ok", ""),
        # Last: its quoted newline makes later CSV records start one line further down.
        ("manifest_name_with_newline", "sub/new\nline.wav", "", "ok", ""),
    ]
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for line, (case, path, label, outcome, reason) in enumerate(rows, start=2):
            writer.writerow([path, label, ""])
            where = path if path.startswith("/") else f"{folder}/{path}"
            if outcome == "refused":
                reason = f"line {line}: {reason}"
            c.add(case, Path(where), outcome, reason=reason, label=label or None)
    return manifest, c.cases


# Writers of hostile media ---------------------------------------------------------------


def _blank_frame(width: int, height: int, level: int = 0) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([level]) * plane.buffer_size)
    return frame


def _x264_stream(container: Any, size: int, rate: int | Fraction) -> Any:
    stream = container.add_stream("libx264", rate=rate)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "51"}
    return stream


def _huge_frames(path: Path) -> None:
    """One flat 8192x8192 frame: 67 Mpixels (200 MB as RGB) in about 200 kB."""
    with av.open(str(path), "w") as container:
        stream = _x264_stream(container, 8192, 1)
        for packet in [*stream.encode(_blank_frame(8192, 8192)), *stream.encode()]:
            container.mux(packet)


def _resolution_switch(path: Path, small: int = 64, big: int = 8192, lead: int = 12) -> Path:
    """``lead`` frames of ``small`` pixels squared, then one of ``big``: each keyframe carries
    its own SPS, and the container's header (made from the first) says ``small``."""
    encoded = []
    for size, count in ((small, lead), (big, 1)):
        with av.open(io.BytesIO(), "w", format="mp4") as scratch:
            stream = _x264_stream(scratch, size, 1)
            stream.options = {**stream.options, "x264-params": "repeat-headers=1"}
            frames = [_blank_frame(size, size, level=i) for i in range(count)]
            packets = [p for f in frames for p in stream.encode(f)] + list(stream.encode())
            encoded.append((bytes(stream.codec_context.extradata or b""), packets))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=1)
        stream.width = stream.height = small
        stream.codec_context.extradata = encoded[0][0]
        stream.time_base = Fraction(1, 1000)
        for index, packet in enumerate(p for _, packets in encoded for p in packets):
            packet.stream = stream
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = 1000 * index
            packet.duration = 1000
            container.mux(packet)
    return path


class _Unseekable(io.RawIOBase):
    """A write-only file the muxer cannot seek back in, so it writes no duration header."""

    def __init__(self, handle: io.BufferedWriter) -> None:
        self._handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._handle.write(data)


def _two_frames_apart(path: Path, seconds: int, *, seekable: bool = True) -> None:
    """Two 16x16 frames at pts 0 and ``seconds`` (time base 1 s): a long claim in 1 kB. Without
    a seekable output Matroska records no duration, so ingest must measure the packets."""
    with contextlib.ExitStack() as stack:
        target: Any = str(path)
        if not seekable:
            target = _Unseekable(stack.enter_context(path.open("wb")))
        container = stack.enter_context(
            av.open(target, "w", format=path.suffix[1:].replace("mkv", "matroska"))
        )
        stream = _x264_stream(container, 16, 1)
        stream.codec_context.time_base = Fraction(1, 1)
        for pts in (0, seconds):
            frame = _blank_frame(16, 16, level=pts % 251)
            frame.pts, frame.time_base = pts, Fraction(1, 1)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _absurd_frame_rate(path: Path) -> None:
    """Ten 16x16 frames at a million frames per second (MP4 stores any rate)."""
    with av.open(str(path), "w") as container:
        stream = _x264_stream(container, 16, 1_000_000)
        for i in range(10):
            for packet in stream.encode(_blank_frame(16, 16, level=20 * i)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _many_streams(path: Path, count: int = 1000) -> None:
    """``count`` PCM streams of 64 samples each in Matroska (2000 crash PyAV's muxer)."""
    with av.open(str(path), "w") as container:
        streams = [
            container.add_stream("pcm_s16le", rate=8000, layout="mono") for _ in range(count)
        ]
        for stream in streams:
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 64), np.int16), format="s16", layout="mono"
            )
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                container.mux(packet)
        for stream in streams:
            for packet in stream.encode():
                container.mux(packet)


def _wav(
    path: Path, *, rate: int, channels: int = 1, bits: int = 16, data_bytes: int = 200_000
) -> Path:
    """A PCM WAV whose header (written by hand) says what it is told, over ``data_bytes`` of
    silence."""
    block = channels * bits // 8
    header = (
        b"WAVE"
        + b"fmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits
        )
    )
    header += b"data" + struct.pack("<I", data_bytes)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", len(header) + data_bytes) + header + bytes(data_bytes)
    )
    return path


def _flac_claiming_forever(path: Path) -> None:
    """One second of FLAC whose STREAMINFO claims 2**36 - 1 samples (2 years at 8 kHz)."""
    soundfile.write(str(path), np.zeros(8000, np.int16), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    # "fLaC", a 4-byte block header, then STREAMINFO: its bytes 10-17 end in the 36-bit
    # total sample count.
    start = 4 + 4 + 10
    packed = int.from_bytes(data[start : start + 8], "big") | (2**36 - 1)
    data[start : start + 8] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
