"""`python -m pixelwise` (also what `torchrun -m pixelwise train ...` runs)."""
from pixelwise.cli import main

main()
