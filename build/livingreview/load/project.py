"""A project on disk: its root, its configuration, and the paths derived from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from livingreview.load.config import Config, Overrides, load_config
from livingreview.util import gitinfo

RESOURCES = Path(str(resources.files("livingreview") / "resources"))

# The version folder of a build from uncommitted changes: it never gets a commit's permalink.
LOCAL_VERSION = "local"


@dataclass(frozen=True)
class Project:
    root: Path
    config: Config
    # The git checkout the files come from, when not ``root``: verify's scratch copy of the
    # project is no checkout, and its results carry the provenance of the original.
    checkout: Path | None = None

    @classmethod
    def load(cls, root: Path | str = ".", overrides: Overrides | None = None) -> Project:
        """The project at ``root``: manuscript.yaml with the command line's ``overrides`` applied."""
        root = Path(root).resolve()
        return cls(root=root, config=(overrides or Overrides()).apply(load_config(root)))

    @property
    def content_dir(self) -> Path:
        return self.root / self.config.content_dir

    @property
    def output_dir(self) -> Path:
        return self.root / self.config.output_dir

    @property
    def site_dir(self) -> Path:
        return self.root / self.config.site_dir

    def _resource(self, configured: Path | None, default: str) -> Path:
        return self.root / configured if configured else RESOURCES / default

    @property
    def csl(self) -> Path:
        return self._resource(self.config.pandoc.csl, "csl/style.csl")

    @property
    def html_theme(self) -> Path:
        return self._resource(self.config.pandoc.html_theme, "themes/default.html")

    @property
    def html_plugins(self) -> Path:
        return self._resource(self.config.pandoc.html_plugins, "themes/plugins.html")

    @property
    def pandoc_defaults(self) -> list[Path]:
        builtin = [RESOURCES / "pandoc/defaults/common.yaml", RESOURCES / "pandoc/defaults/html.yaml"]
        return builtin + [self.root / p for p in self.config.pandoc.defaults]

    @cached_property
    def revision(self) -> gitinfo.Revision | None:
        return gitinfo.revision(self.checkout or self.root, (str(self.config.output_dir), str(self.config.site_dir)))

    @property
    def repository(self) -> str | None:
        """The GitHub slug owner/name: configured, else the 'origin' remote's, else None (never invented)."""
        if self.config.repository:
            return self.config.repository
        if self.revision and self.revision.origin_slug:
            return self.revision.origin_slug
        return None

    @property
    def site_url(self) -> str | None:
        """The published site's base URL, ending in ``/``; None when neither it nor a repository is known."""
        if self.config.site_url:
            return self.config.site_url
        if self.repository is None:
            return None
        owner, name = self.repository.split("/", 1)
        return f"https://{owner}.github.io/{name}/"

    @property
    def missing_locks(self) -> list[Path]:
        """Configured environment lock files that do not exist: environment changes then re-run nothing."""
        return [p for p in self.config.environment if not (self.root / p).is_file()]

    @property
    def version(self) -> str:
        """This build's folder under ``v/``: the commit, or ``local`` for a dirty tree or no commit."""
        revision = self.revision
        return revision.commit if revision and not revision.dirty else LOCAL_VERSION

    @property
    def version_url(self) -> str | None:
        """The URL this build's version folder will be published at, ending in ``/``; None without a site URL."""
        return f"{self.site_url}v/{self.version}/" if self.site_url else None
