"""`python -m gitops_flow` runs the command line."""

from gitops_flow.cli.main import main

if __name__ == "__main__":  # a child process of the test sandbox imports this module as __mp_main__
    raise SystemExit(main())
