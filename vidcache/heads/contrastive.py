"""contrastive head: being written."""
