"""Offline W&B runs read back: the records of a run's ``.wandb`` file, for the W&B tests."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2


def wandb_records(data: bytes) -> Iterator[wandb_internal_pb2.Record]:
    """The records of an offline run's ``.wandb`` file, in order.

    By hand: the wandb package has had no reader for its own files since its Go core. The file is
    a 7-byte header (``:W&B``, magic, version), then LevelDB's log format: 32 KiB blocks of
    chunks, each a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last) and its
    bytes; a block's last bytes too few for a header are padding. Each record is a protobuf.
    """
    assert data[:4] == b":W&B", data[:7]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if (left := 32 * 1024 - pos % (32 * 1024)) < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def run_record(data: bytes) -> wandb_internal_pb2.RunRecord:
    """The run's own record: id, name, group, tags, config."""
    [run] = [r.run for r in wandb_records(data) if r.WhichOneof("record_type") == "run"]
    return run


def finished_records(root: Path, n: int, timeout_s: float = 30.0) -> dict[str, list]:
    """The records of the ``n`` offline runs under ``root`` by folder name, once each has its
    exit record (W&B's service may write the last ones a moment after ``finish()``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {
            f.parent.name: list(wandb_records(f.read_bytes()))
            for f in sorted(root.glob("offline-run-*/run-*.wandb"))
        }
        kinds = [{r.WhichOneof("record_type") for r in records} for records in runs.values()]
        if (len(runs) == n and all("exit" in k for k in kinds)) or time.monotonic() > deadline:
            assert len(runs) == n, runs.keys()
            return runs


def logged_epochs(records: list) -> list[int]:
    """The epochs a run's history logged ``epoch/*`` metrics for."""
    return [
        int(json.loads(item.value_json))
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
        if (item.key or "/".join(item.nested_key)) == "epoch"
    ]
