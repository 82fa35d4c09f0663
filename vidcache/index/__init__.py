"""FAISS indexes and mining over a cache (issue 4). Reads only through `vidcache.Cache`; nothing here
is implemented yet, so nothing is exported."""
