"""finetune/: the CLIP image tower that made a cached view, trained jointly with a head on the
view's frames (from the cache's `frames` view or the videos), exported for `extract`.

config (the options), frames (pixels), augment (per-video crop + flip), model (tower + head,
freezing), optim (param groups, schedule), distributed (torchrun/DDP), export (backbone file),
loop (the run)."""
