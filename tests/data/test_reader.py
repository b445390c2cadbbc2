"""data/reader.py against real endpoints: error classification, exact bytes, resume after a dropped connection,
read-ahead of the next shard; and the read-amplification warning of make_loader."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from senet_dist.data import DatasetInfo, LoaderConfig, make_loader
from senet_dist.data import loader as loader_module
from senet_dist.data.reader import (
    RemoteShard,
    RetryPolicy,
    is_transient,
    open_shard,
    read_ahead,
)
from senet_dist.data.stream import read_amplification
from senet_dist.storage import cached_filesystem, upload_dir, write_bytes
from tests.helpers import free_port, wait_until
from tests.s3proxy import TcpProxy


def test_retry_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.delay(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def _s3_error(location: str) -> OSError:
    fs, path = cached_filesystem(location)
    with pytest.raises(OSError) as info:
        fs.open_input_file(path)
    return info.value


def test_refused_connection_is_transient_missing_object_is_not(s3_bucket: str, monkeypatch) -> None:
    write_bytes(f"s3://{s3_bucket}/there", b"x")
    assert not is_transient(_s3_error(f"s3://{s3_bucket}/absent"))
    assert not is_transient(_s3_error(f"s3://no-such-bucket-{s3_bucket}/absent"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert is_transient(_s3_error(f"s3://{s3_bucket}/there"))


def _answering(status: int, code: str) -> type[BaseHTTPRequestHandler]:
    """An HTTP handler that answers every request with ``status`` and an S3 error body (none for HEAD)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (503, "SlowDown", True),
        (500, "InternalError", True),
        (429, "TooManyRequests", True),
        (403, "AccessDenied", False),
    ],
)
def test_http_errors_are_classified_by_status(s3_bucket: str, monkeypatch, status, code, transient) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _answering(status, code))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        assert is_transient(_s3_error(f"s3://{s3_bucket}/any")) is transient
    finally:
        server.shutdown()


@pytest.fixture
def blob(s3_proxy: TcpProxy, s3_bucket: str) -> tuple[str, bytes]:
    data = bytes(range(256)) * 200  # 51,200 bytes
    uri = f"s3://{s3_bucket}/blob.bin"
    write_bytes(uri, data)
    return uri, data


def test_remote_shard_reads_exact_bytes_in_small_chunks(blob: tuple[str, bytes]) -> None:
    uri, data = blob
    with RemoteShard(uri, chunk_bytes=1000, buffer_bytes=3000) as shard:
        got = [shard.read(7), shard.read(4096), shard.read()]
        assert shard.read(10) == b""
    assert b"".join(got) == data and len(got[0]) == 7 and len(got[1]) == 4096


def test_dropped_connection_resumes_at_the_offset_fetched(
    blob: tuple[str, bytes], s3_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    uri, data = blob
    with caplog.at_level(logging.WARNING, logger="senet_dist.data.reader"):
        with RemoteShard(uri, RetryPolicy(base_delay=0.2), chunk_bytes=4096, buffer_bytes=4096) as shard:
            head = shard.read(5000)  # the fetch thread now waits on a full buffer
            outage = threading.Thread(target=s3_proxy.outage, args=(3.0,))  # longer than the SDK's own ~2 s of retries
            outage.start()
            wait_until(lambda: s3_proxy.is_down, 10, "proxy down")
            rest = shard.read()  # the next ranged reads fail until the proxy is back, then resume at the offset
            outage.join()
    assert head + rest == data
    assert any("retry" in r.getMessage() for r in caplog.records)


def test_next_shard_is_fetched_while_the_current_one_is_read(s3_proxy: TcpProxy, s3_bucket: str, tmp_path: Path):
    (tmp_path / "a.tar").write_bytes(b"a" * 3000)
    (tmp_path / "b.tar").write_bytes(b"b" * 3000)
    upload_dir(tmp_path, f"s3://{s3_bucket}/v")
    shards = [(f"s3://{s3_bucket}/v/a.tar", 1), (f"s3://{s3_bucket}/v/b.tar", 2)]
    ahead = read_ahead(shards, RetryPolicy(attempts=1))
    first, n, stream = next(ahead)
    assert (first, n) == shards[0] and stream is not None and stream.read() == b"a" * 3000

    def fetching_b() -> bool:
        return any(t.name == f"read-ahead {shards[1][0]}" and t.is_alive() for t in threading.enumerate())

    wait_until(lambda: not fetching_b(), 10, "b.tar fetched")  # its thread ends once all its bytes are buffered
    s3_proxy.down()  # from now on only what was fetched ahead can be read (attempts=1: no retry)
    second, n, stream = next(ahead)
    assert (second, n) == shards[1] and stream is not None and stream.read() == b"b" * 3000
    assert next(ahead, None) is None


def test_local_shards_open_as_plain_buffered_files(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"local")
    assert [(loc, n, s) for loc, n, s in read_ahead([(str(path), 1)])] == [(str(path), 1, None)]
    with open_shard(str(path)) as f:
        assert f.read() == b"local" and not isinstance(f, RemoteShard)


@pytest.mark.parametrize(("shards", "world", "workers", "factor"), [(8, 2, 2, 1), (8, 4, 2, 1), (8, 3, 3, 9)])
def test_read_amplification(shards: int, world: int, workers: int, factor: int) -> None:
    assert read_amplification(shards, world, workers) == factor
    assert read_amplification(1, 1, 0) == 1


def test_loader_warns_once_about_read_amplification(
    lfw_shards_factory, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    vdir = lfw_shards_factory(None)  # train: 160 samples in 8 shards
    assert len(DatasetInfo.load(vdir).shards["train"]) == 8
    monkeypatch.setattr(loader_module, "_WARNED", set())
    cfg = LoaderConfig(batch_size=4, image_size=16, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="senet_dist.data.loader"):
        for epoch in range(2):
            make_loader(vdir, "train", cfg, rank=0, world_size=8, epoch=epoch)
        make_loader(vdir, "train", cfg, rank=1, world_size=8)
        make_loader(vdir, "val", cfg, rank=0, world_size=8)
        make_loader(vdir, "train", cfg, rank=0, world_size=4)  # 8 shards for 8 slots: no amplification
    messages = [r.getMessage() for r in caplog.records if r.name == "senet_dist.data.loader"]
    assert len(messages) == 1, messages
    assert "every one of the 16 reader slots reads all 8 shards: 16 x the data is read per epoch" in messages[0]
    assert "--max-count 10 " in messages[0]  # 160 // 16: 16 shards of 10
