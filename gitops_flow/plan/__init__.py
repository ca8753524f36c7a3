"""`gitops-flow plan`: what merging a branch will do, computed offline, and how it reads in a terminal, a job
summary, a pull-request comment and JSON."""
