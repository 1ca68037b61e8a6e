"""What every layer may use and none of it knows about faces or models: atomic file writes, advisory file locks,
JSON output, the package logger, optional extras, printable names."""
