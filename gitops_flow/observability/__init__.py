"""What the server tells about itself: Prometheus metrics, recent figures, traces and logs."""
