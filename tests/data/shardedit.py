"""Editing a built tar shard in place, to plant corrupt or out-of-range data for the loader tests."""
from __future__ import annotations

import io
import tarfile


def rewrite_shard(path, fn) -> None:
    """Rewrite a tar shard, passing (member name, bytes) of each member through `fn`; None drops the member."""
    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            data = fn(name, data)
            if data is None:
                continue
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
