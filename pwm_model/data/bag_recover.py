"""A cut-off .mcap recording (the recorder was killed, the disk filled) read up to the cut.

Such a file has no summary or footer, so ``rosbags`` refuses it whole. Its records are still in order up to the
cut: ``recover_mcap`` walks the record framing (opcode, length) itself, keeps every schema, channel and whole
message it finds, inside chunks too (an uncompressed chunk cut in the middle still gives its whole messages; a
compressed one only if it is complete), and writes them into a fresh .mcap file with the ``mcap`` library, which
``DriveReader`` then reads, saying how much it kept.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x03, 0x04, 0x05, 0x06


@dataclass(frozen=True)
class Recovered:
    path: Path  # the repaired copy
    messages: int  # whole messages kept


def storage_files(bag: Path) -> list[Path]:
    """The .mcap files of a bag (a single file, or those of a bag directory)."""
    if bag.is_file():
        return [bag] if bag.suffix == ".mcap" else []
    return sorted(bag.glob("*.mcap"))


def _records(buf: bytes, start: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """(opcode, body, complete) of each record from ``start``; the last may be cut short."""
    i = start
    while i + 9 <= len(buf):
        op, n = buf[i], struct.unpack_from("<Q", buf, i + 1)[0]
        body = buf[i + 9:i + 9 + n]
        yield op, body, len(body) == n
        if len(body) < n:
            return
        i += 9 + n


def _chunk_records(body: bytes, complete: bool) -> Iterator[tuple[int, bytes, bool]]:
    """The records inside a chunk body (uncompressed, possibly cut; or compressed and complete)."""
    from mcap.records import Chunk, ReadDataStream
    from mcap.stream_reader import get_chunk_data_stream

    if len(body) < 32:
        return
    (n_comp,) = struct.unpack_from("<I", body, 28)
    compression = body[32:32 + n_comp].decode("utf-8", "replace")
    data_at = 32 + n_comp + 8
    if compression == "":
        yield from _records(body[data_at:])
    elif complete:
        chunk = Chunk.read(ReadDataStream(io.BytesIO(body)))
        stream, size = get_chunk_data_stream(chunk)
        yield from _records(stream.read(size))


def recover_mcap(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Recovered:
    """Copy the readable records of ``src`` up to its cut into ``dst``; raises ValueError when nothing is whole."""
    from mcap.records import Channel, Header, Message, ReadDataStream, Schema
    from mcap.writer import Writer

    buf = Path(src).read_bytes()
    if not buf.startswith(MAGIC):
        raise ValueError(f"{src} does not start with the mcap magic bytes")
    kinds = {OP_SCHEMA: Schema, OP_CHANNEL: Channel, OP_MESSAGE: Message}
    schemas: dict[int, int] = {}
    channels: dict[int, int] = {}
    messages = 0
    with open(dst, "wb") as g:
        writer = Writer(g)
        started = False

        def take(op: int, body: bytes) -> None:
            nonlocal messages
            stream = ReadDataStream(io.BytesIO(body))
            record = Message.read(stream, len(body)) if op == OP_MESSAGE else kinds[op].read(stream)
            if isinstance(record, Schema):
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel):
                channels[record.id] = writer.register_channel(record.topic, record.message_encoding,
                                                              schemas.get(record.schema_id, 0), dict(record.metadata))
            elif record.channel_id in channels:
                writer.add_message(channels[record.channel_id], record.log_time, record.data, record.publish_time,
                                   record.sequence)
                messages += 1

        for op, body, complete in _records(buf, len(MAGIC)):
            if op == OP_HEADER and complete and not started:
                header = Header.read(ReadDataStream(io.BytesIO(body)))
                writer.start(header.profile, header.library)
                started = True
            elif started and op == OP_CHUNK:
                for inner, ibody, icomplete in _chunk_records(body, complete):
                    if icomplete and inner in kinds:
                        take(inner, ibody)
            elif started and complete and op in kinds:
                take(op, body)
        if not started or messages == 0:
            raise ValueError(f"no whole message could be read from {src}")
        writer.finish()
    return Recovered(Path(dst), messages)
