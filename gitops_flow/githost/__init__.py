"""Every Git host: webhooks in; commit statuses, deployments, notifications and the plan comment out."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["comment", "deploys", "feedback", "gitea_webhook", "github_webhook", "gitlab_webhook", "repos", "sinks"]
