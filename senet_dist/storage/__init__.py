"""Storage: every stage takes a local path or an object-store URI (``s3://bucket/prefix``) alike.

- :mod:`~senet_dist.storage.fs`: resolving a location to a ``pyarrow.fs`` filesystem (S3 settings from the standard
  ``AWS_*`` environment), joining, listing, reading, writing and copying trees;
- :mod:`~senet_dist.storage.errors`: pyarrow's ``OSError`` texts classified into one-line :class:`StorageError` kinds
  (what a retry can fix), and :func:`redact`, the one way a location is shown in a message, a table or a log.

Import from here: the names below are the API.
"""

from senet_dist.storage.errors import (
    StorageConfigError,
    StorageError,
    StorageUnreachableError,
    classify_error,
    redact,
    storage_errors,
)
from senet_dist.storage.fs import (
    SECRET_ENV,
    SHIP_STORAGE_ENV,
    basename,
    cached_filesystem,
    check_bucket,
    copy_tree,
    download_dir,
    is_local,
    is_uri,
    join,
    list_files,
    local_dir,
    read_bytes,
    resolve_filesystem,
    s3_options_from_env,
    ship_credentials,
    storage_env,
    storage_environment,
    tree_bytes,
    upload_dir,
    upload_file,
    uri_for,
    write_bytes,
)

__all__ = [
    "SECRET_ENV",
    "SHIP_STORAGE_ENV",
    "StorageConfigError",
    "StorageError",
    "StorageUnreachableError",
    "basename",
    "cached_filesystem",
    "check_bucket",
    "classify_error",
    "copy_tree",
    "download_dir",
    "is_local",
    "is_uri",
    "join",
    "list_files",
    "local_dir",
    "read_bytes",
    "redact",
    "resolve_filesystem",
    "s3_options_from_env",
    "ship_credentials",
    "storage_env",
    "storage_environment",
    "storage_errors",
    "tree_bytes",
    "upload_dir",
    "upload_file",
    "uri_for",
    "write_bytes",
]
