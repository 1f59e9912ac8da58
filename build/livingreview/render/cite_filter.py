"""Pandoc filter: Manubot's ``pandoc-manubot-cite``, made strictly offline.

Manubot's filter would look up any citation missing from the manual references on
the internet, and downloads the CSL JSON schema whenever manual references are
loaded. Both are replaced here: references come only from local CSL JSON, the schema
is a local file, and every unresolved key is written to the file named by
``LIVINGREVIEW_UNRESOLVED`` so the build can report where it is cited. The filter then
fails, unless ``LIVINGREVIEW_ALLOW_UNRESOLVED`` is ``1`` (citations.unresolved: warn):
then it leaves the keys as Manubot's filter does, for citeproc to print as the key in
bold with "?".
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

# Not livingreview.project.RESOURCES: pandoc starts this filter on every build, and
# importing the project module would load pydantic and the whole config schema.
RESOURCES = Path(__file__).parent.parent / "resources"

UNRESOLVED_ENV = "LIVINGREVIEW_UNRESOLVED"
ALLOW_UNRESOLVED_ENV = "LIVINGREVIEW_ALLOW_UNRESOLVED"


@functools.lru_cache
def local_csl_validator():
    # jsonschema takes a sixth of a second to import; a build whose references are cached never validates.
    import jsonschema

    schema = json.loads((RESOURCES / "csl/csl-data-local.json").read_text())
    return jsonschema.Draft7Validator(schema)


def main() -> None:
    # Deferred: the build imports this module for its constants and must not load Manubot's filter with them.
    import manubot.cite.citations as citations
    import manubot.cite.citeproc as citeproc
    from manubot.cite.citekey import citekey_to_csl_item
    from manubot.pandoc.cite_filter import main as manubot_filter

    citeproc.get_jsonschema_csl_validator = local_csl_validator
    unresolved: list[dict[str, str]] = []

    def local_only(citekey, prune=True, manual_refs=None, log_level="WARNING"):
        if citekey.standard_id in (manual_refs or {}):
            return citekey_to_csl_item(citekey, prune=prune, manual_refs=manual_refs, log_level=log_level)
        unresolved.append({"input_id": citekey.input_id, "standard_id": citekey.standard_id})
        return None

    citations.citekey_to_csl_item = local_only
    manubot_filter()
    if unresolved:
        report = os.environ.get(UNRESOLVED_ENV)
        if report:
            with open(report, "w", encoding="utf-8") as handle:
                json.dump(unresolved, handle)
        if os.environ.get(ALLOW_UNRESOLVED_ENV) != "1":
            sys.exit(3)


if __name__ == "__main__":
    main()
