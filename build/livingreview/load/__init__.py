"""Loading: manuscript.yaml into a typed config, the project, content/ checked, and analysis results on disk."""
