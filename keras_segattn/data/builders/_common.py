"""Helpers shared by the manual-download builders."""

import os

from etils import epath


def find_source(dl_manager, archive_name, extracted_name, dataset, url):
    """Return the root of an archive's content in ``dl_manager.manual_dir``.

    Accepts the archive itself (extracted once by tfds into ``downloads/extracted``) or
    a folder named ``extracted_name`` (the archive already unpacked by the user).
    """
    manual_dir = epath.Path(dl_manager.manual_dir)
    archive = manual_dir / archive_name
    if archive.exists():
        return epath.Path(dl_manager.extract(archive))
    if (manual_dir / extracted_name).exists():
        return manual_dir
    raise FileNotFoundError(
        f"{dataset}: {archive_name} not found in manual_dir={os.fspath(manual_dir)!r}. "
        f"Download it from {url} and put the file (or its unpacked {extracted_name}/ "
        "folder) in that directory, then call keras_segattn.data.load(..., manual_dir=...)."
    )
