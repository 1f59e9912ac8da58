"""Stage publish: notebook pages, the versioned site in webpage/, and deploying it to gh-pages."""
