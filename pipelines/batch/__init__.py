"""Batch fusion of folders and archive shards on Ray Data actors, read as Ray's own batch
inference examples are: sources -> one fuser actor -> sinks, wired by ``run.batch_fuse``.

    sources.py   what to fuse: a folder's pairs, or the shards of archives (listing, streaming,
                 the untrusted-archive rules of archives.py)
    fuser.py     the model pinned on the driver; one actor: model, then the library's per-pair
                 path (dwsfusion.stream: decode, fuse, compose colour, score, encode)
    sinks.py     where results go: a folder (PNG + row mark), a shard (tar + Parquet), an archive
    manifest.py  the run's record: what was fused with what, the counts, resume and refusal
    progress.py  the pair counter the actors report to and the driver's bar polls
    run.py       FuseJob (the one settings object, end to end) and batch_fuse, which wires them

The package imports no submodule here, so that ``pipelines.config`` can use its archive rules
without a circle; import ``pipelines.batch.run`` for ``batch_fuse``.
"""
