"""One module per group of CLI commands; `vidcache.cli` assembles them into the `vidcache` group."""
