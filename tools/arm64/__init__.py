"""Helpers of tools/arm64_check.sh (stdlib only: they run on the host before any venv exists)."""
