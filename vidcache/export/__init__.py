"""`vidcache export`: one view of a cache in the layouts other tools read (per-video .npy, one parquet
table, webdataset tar shards). Reads the cache through `Cache` only; writes every file atomically and
keeps files an earlier export wrote from the same rows (resumable).

`from vidcache.export.api import export_view`; `from vidcache.export.config import ExportConfig`
(kept apart, so the command line builds its flags without importing h5py).
"""
