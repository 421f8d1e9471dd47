"""Stand-in for webui v1.10.1 modules/hashes.py: SHA-256 of files, cached by title and mtime."""
import hashlib
import os

cache = {}   # title -> (mtime, sha256)


def sha256_from_cache(filename, title, use_addnet_hash=False):
    """The cached hash when the file is unchanged, else None (modules/hashes.py: sha256_from_cache)."""
    entry = cache.get(title)
    if entry is None or entry[0] != os.path.getmtime(filename):
        return None
    return entry[1]


def sha256(filename, title, use_addnet_hash=False):
    """The file's SHA-256, computed and cached when needed (modules/hashes.py: sha256)."""
    value = sha256_from_cache(filename, title)
    if value is not None:
        return value
    h = hashlib.sha256()
    with open(filename, "rb") as f:
        h.update(f.read())
    cache[title] = (os.path.getmtime(filename), h.hexdigest())
    return cache[title][1]
