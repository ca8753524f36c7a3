"""Secrets and credentials: which may be read, where each may go, and how they are masked."""
