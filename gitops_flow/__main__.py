"""`python -m gitops_flow` runs the command line."""

from gitops_flow.cli import main

raise SystemExit(main())
