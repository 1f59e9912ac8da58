"""Small shared utilities: errors, atomic writes, git queries, child processes, the project lock, progress, YAML with lines."""
