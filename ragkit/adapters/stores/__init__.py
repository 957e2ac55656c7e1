"""Vector stores: ``edge`` (embedded Qdrant Edge, the default) and ``qdrant`` (qdrant-client).

Import the implementation you need from its module (``ragkit.adapters.stores.edge`` or
``ragkit.adapters.stores.qdrant``); this package does not import them, so using one never loads the other.
"""
