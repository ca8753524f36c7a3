"""The operator console: /ui, served by `gitops-flow serve` itself (docs/console.md)."""
