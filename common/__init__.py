"""What every package shares: progress and log lines on stderr (quiet with --quiet)."""
