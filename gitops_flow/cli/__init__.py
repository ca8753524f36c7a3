"""The `gitops-flow` command line and what only it uses: demo, workers, reports, remote commands."""
