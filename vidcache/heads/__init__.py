"""Heads trained over a cache (issues 5 and 6). Reads only through `vidcache.Cache`; nothing here is
implemented yet, so nothing is exported."""
