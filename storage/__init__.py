"""Storage tiers: where an immortal's log chunks and checkpoints live.

Each module implements :class:`ambrosia_edge.store.LogStore` for one kind of storage and is
loaded lazily through the registry in :mod:`ambrosia_edge.store`, keyed by URL scheme.
"""
