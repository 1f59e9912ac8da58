"""The reviewer commands: verify (re-run and compare every published value) and diff (compare two versions)."""
