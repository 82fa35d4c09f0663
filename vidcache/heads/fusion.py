"""fusion head: being written."""
