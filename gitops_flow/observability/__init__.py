"""What the server tells about itself: Prometheus metrics, recent figures, traces and logs."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["metrics", "recent", "telemetry"]
