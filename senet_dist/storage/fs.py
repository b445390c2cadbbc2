"""Filesystem helpers so every stage can take a local path or an object-store URI (``s3://bucket/prefix``).

Why a wrapper around ``pyarrow.fs.FileSystem.from_uri``: S3-compatible servers (MinIO, Ceph, a test
server) are reached through ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, which pyarrow does not read on
every version; we pass the endpoint, scheme, region and keys to :class:`pyarrow.fs.S3FileSystem`
explicitly so that the same environment works for boto3, the AWS CLI and this package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

from senet_dist.storage.errors import StorageConfigError, redact, storage_errors

# Set to 1 to hand the driver's object-storage keys to Ray tasks and training workers (and into Ray Train's checkpoint
# filesystem). Off by default: a node gets its credentials from the cluster's own configuration (its environment, an
# instance role, a runtime env or a Secret the operator set), never from whoever started a flow run; the keys would
# otherwise sit in Ray's object store and in pickled task arguments on every node.
SHIP_STORAGE_ENV = "SENET_SHIP_STORAGE_ENV"
# The AWS_* settings that are secrets: never shipped unless SHIP_STORAGE_ENV=1, never shown.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def ship_credentials() -> bool:
    """Whether the driver's object-storage keys go to Ray tasks and workers (``SENET_SHIP_STORAGE_ENV=1``)."""
    return os.environ.get(SHIP_STORAGE_ENV, "0").strip().lower() in ("1", "true", "yes")


def storage_env() -> dict[str, str]:
    """This process's object-storage settings (``AWS_*``: endpoint, region, profile), handed to Ray tasks and
    training workers: they inherit their raylet's environment, not the driver's, so without them a node would reach
    another endpoint or none. The keys (:data:`SECRET_ENV`) only with :func:`ship_credentials`."""
    ship = ship_credentials()
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") and (ship or k not in SECRET_ENV)}


@contextmanager
def storage_environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` while a block runs in a Ray worker process that runs many tasks: left as it was afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` locations (``s3://``, ``file://``, ``gs://``), False for plain paths."""
    return "://" in str(location)


def is_local(location: str | os.PathLike[str]) -> bool:
    """True when ``location`` resolves to the local filesystem."""
    return not is_uri(location) or str(location).startswith("file://")


def s3_options_from_env(*, keys: bool = True) -> dict[str, object]:
    """S3FileSystem keyword arguments taken from the standard AWS environment variables.

    ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL`` (the AWS SDK convention). With a custom
    endpoint the region defaults to ``us-east-1`` so pyarrow never probes AWS to resolve it. ``keys=False`` leaves
    the access key, secret and session token out: the filesystem then finds credentials where it runs (the AWS
    SDK's chain: that machine's environment, config files, an instance role), which is what a filesystem shipped to
    other nodes should do.
    """
    opts: dict[str, object] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"AWS endpoint URL must look like http(s)://host[:port], got {redact(endpoint)!r}")
        opts["endpoint_override"] = parts.netloc.rsplit("@", 1)[-1]
        opts["scheme"] = parts.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        opts["region"] = region or "us-east-1"
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if keys and key and secret:
        opts["access_key"], opts["secret_key"] = key, secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            opts["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return opts


def resolve_filesystem(location: str | os.PathLike[str], *, keys: bool = True) -> tuple[pafs.FileSystem, str]:
    """Map a local path or URI to ``(filesystem, path inside it)``.

    Plain paths become absolute local paths. ``s3://bucket/prefix`` without a query string is built from
    the environment (see :func:`s3_options_from_env`; ``s3://KEY:SECRET@bucket/...`` names its own keys, which
    ``keys=False`` drops too); a URI with a query string (``s3://b/p?endpoint_override=...``) and every other scheme
    go to ``FileSystem.from_uri`` unchanged.
    """
    loc = str(location)
    if not loc:
        raise ValueError("empty storage location")
    if not is_uri(loc):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(loc))
    parts = urlsplit(loc)
    if parts.scheme == "s3" and not parts.query:
        userinfo, _, bucket = parts.netloc.rpartition("@")
        if not bucket:
            raise ValueError(f"S3 URI needs a bucket: {redact(loc)!r}")
        opts = s3_options_from_env(keys=keys)
        if userinfo and keys:
            user, _, password = userinfo.partition(":")
            opts |= {"access_key": unquote(user), "secret_key": unquote(password)}
            opts.pop("session_token", None)
        path = (bucket + "/" + parts.path.strip("/")).rstrip("/")
        return pafs.S3FileSystem(**opts), path
    try:
        fs, path = pafs.FileSystem.from_uri(loc)
    except (ValueError, OSError) as exc:  # pyarrow's message may quote the URI, keys and all
        detail = str(exc).replace(loc, redact(loc))
        if parts.query:
            detail = detail.replace(parts.query, "...")
        raise ValueError(f"cannot resolve storage location {redact(loc)!r}: {detail}") from None
    return fs, path.rstrip("/") or path


_FILESYSTEMS: dict[tuple[str, ...], tuple[pafs.FileSystem, str]] = {}  # no lock: a rare duplicate client is harmless


def cached_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """:func:`resolve_filesystem` for a URI, with one filesystem per process, bucket and storage settings.

    For readers that open many objects (source images in a process pool, shards in a DataLoader worker): an S3 client
    holds a connection pool, and one per object would reconnect every time. The key holds the process id (a client
    inherited through fork is never reused) and the S3 settings of the environment (a changed endpoint or key never
    gets a stale client)."""
    u = urlsplit(location, allow_fragments=False)  # a "#" in an object name is part of its path
    key = (str(os.getpid()), u.scheme, u.netloc, u.query, repr(sorted(s3_options_from_env().items())))
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = resolve_filesystem(urlunsplit((u.scheme, u.netloc, "", u.query, "")))
    fs, root = _FILESYSTEMS[key]
    return fs, f"{root.rstrip('/')}/{u.path.lstrip('/')}"


def uri_for(location: str | os.PathLike[str], path: str) -> str:
    """The location of ``path`` (a path inside ``location``'s filesystem) in ``location``'s own form:
    a plain path stays a path; a URI keeps its scheme and query (e.g. an S3 endpoint override)."""
    loc = str(location)
    if is_local(loc):
        return path
    parts = urlsplit(loc)
    return f"{parts.scheme}://{path.lstrip('/')}" + (f"?{parts.query}" if parts.query else "")


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """Join path segments onto a local path or URI, keeping a URI's query string at the end."""
    loc = str(location)
    segs = [p.strip("/") for p in parts if p and p.strip("/")]
    if not is_uri(loc):
        return os.path.join(loc, *segs)
    u = urlsplit(loc)
    path = "/".join([u.path.rstrip("/"), *segs]) if segs else u.path
    return urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))


def _file_infos(location: str | os.PathLike[str]) -> tuple[str, list[pafs.FileInfo]]:
    """(root path, info of every file under it); no files when ``location`` is absent."""
    fs, root = resolve_filesystem(location)
    sel = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return root, [info for info in fs.get_file_info(sel) if info.type == pafs.FileType.File]


def list_files(location: str | os.PathLike[str]) -> list[str]:
    """Sorted relative paths (``/``-separated) of every file under ``location``; ``[]`` if it is absent."""
    root, infos = _file_infos(location)
    prefix = root.rstrip("/") + "/"
    return sorted(info.path[len(prefix) :] for info in infos)


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, use_threads: bool = True) -> list[str]:
    """Copy every file under ``src`` to the same relative path under ``dst`` (any pair of filesystems).

    Returns the copied relative paths. Raises ``FileNotFoundError`` when ``src`` is not a directory, so a
    typo never silently uploads nothing.
    """
    src_fs, src_path = resolve_filesystem(src)
    dst_fs, dst_path = resolve_filesystem(dst)
    if src_fs.get_file_info(src_path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"source directory not found: {src}")
    files = list_files(src)
    if not isinstance(dst_fs, pafs.S3FileSystem):  # S3 has no directories; elsewhere parents must exist
        dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(
        src_path,
        dst_path,
        source_filesystem=src_fs,
        destination_filesystem=dst_fs,
        use_threads=use_threads,
    )
    return files


def upload_dir(local_dir: str | os.PathLike[str], uri: str) -> list[str]:
    """Upload a local directory tree (shards, a checkpoint) to ``uri``; returns the relative paths."""
    return copy_tree(Path(local_dir), uri)


def download_dir(uri: str, local_dir: str | os.PathLike[str]) -> list[Path]:
    """Download the tree under ``uri`` into ``local_dir`` (created); returns the local file paths."""
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    return [Path(local_dir) / rel for rel in copy_tree(uri, Path(local_dir))]


def local_dir(location: str | os.PathLike[str], scratch: str | os.PathLike[str]) -> Path:
    """A directory on this machine: a local one as it is, a remote tree (a checkpoint on S3) downloaded into
    ``scratch`` (for readers such as ``torch.load`` that need files)."""
    loc = str(location)
    if is_local(loc):
        return Path(loc.removeprefix("file://"))
    download_dir(loc, scratch)
    return Path(scratch)


def write_bytes(location: str | os.PathLike[str], data: bytes) -> None:
    """Write one small object/file (e.g. a ``LATEST`` marker); a single S3 PUT is atomic."""
    fs, path = resolve_filesystem(location)
    parent = path.rsplit("/", 1)[0]
    if not isinstance(fs, pafs.S3FileSystem) and parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def tree_bytes(location: str | os.PathLike[str]) -> int:
    """Total size of every file under ``location`` (0 if it is absent)."""
    return sum(info.size for info in _file_infos(location)[1])


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    """Read one whole file/object."""
    fs, path = resolve_filesystem(location)
    with fs.open_input_stream(path) as inp:
        return inp.read()


def upload_file(local: str | os.PathLike[str], location: str | os.PathLike[str]) -> None:
    """Stream one local file (a finished shard) to ``location`` without reading it into memory."""
    dst_fs, dst_path = resolve_filesystem(location)
    parent = dst_path.rsplit("/", 1)[0]
    if not isinstance(dst_fs, pafs.S3FileSystem) and parent:
        dst_fs.create_dir(parent, recursive=True)
    pafs.copy_files(
        os.path.abspath(local), dst_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dst_fs
    )


def basename(location: str | os.PathLike[str]) -> str:
    """The last path segment of a path or URI (a URI's query string is not part of it)."""
    loc = str(location)
    path = urlsplit(loc).path if is_uri(loc) else loc
    return path.rstrip("/").rsplit("/", 1)[-1]


def check_bucket(location: str | os.PathLike[str]) -> None:
    """Raise :class:`StorageError` when an ``s3://`` location's bucket does not exist or cannot be reached (a
    missing key under a missing bucket otherwise looks like a plain "not found")."""
    loc = str(location)
    if not is_uri(loc) or urlsplit(loc).scheme != "s3":
        return
    with storage_errors(loc):
        fs, path = resolve_filesystem(loc)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageConfigError(f"bucket does not exist: {redact(loc)}", "no_bucket")
