"""Evaluation and comparison suite: rnncodec models against JPEG, WebP, AVIF and JPEG XL.

- ``codecs``: adapters with one interface (encode and decode real files at each setting, timed).
- ``measure``: wall time and peak RSS growth of one call.
- ``runner``: scores every image × codec × setting once, with a per-point cache.
- ``results``: the one JSON/CSV format (docs/results-schema.md).
- ``report``: AUC, BD-rate, RD plots and the markdown report, read from that JSON.

Run it as ``rnncodec evaluate [DATASET]``.
"""
