"""BentoML wiring: the patches of its internals (each checks the pinned release), shutdown, heap."""
