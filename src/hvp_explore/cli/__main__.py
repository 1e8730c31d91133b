"""``python -m hvp_explore.cli``: the ``hvp-explore`` command where the console script is not on PATH (torchrun -m)."""

from hvp_explore.cli import main

if __name__ == "__main__":
    main()
