"""`python -m idefics_eval ...` (what `torchrun -m idefics_eval run ...` launches)."""

from .cli import main

main()
