"""The command line: argument parsing, one handler per command, the error boundary; serve."""
