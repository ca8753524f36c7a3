"""The Git host and the operator's receivers: outbound HTTP, commit statuses and deployments, notifications, the plan
comment, and the webhooks of GitLab and Gitea/Forgejo."""
