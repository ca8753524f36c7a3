"""The `gitops-flow` command line (cli.main) and what only it uses: demo, workers, reports, remote commands."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["main"]
