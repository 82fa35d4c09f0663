"""temporal head: being written."""
