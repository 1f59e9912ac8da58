"""Stages inject and render: values into the templates, manubot process, pandoc HTML, the Chromium PDF."""
