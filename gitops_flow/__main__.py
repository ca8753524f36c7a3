"""`python -m gitops_flow` runs the command line."""

from gitops_flow.cli.main import main

raise SystemExit(main())
