"""Context caching: the `cachedContents` resource and what a request naming a cache reads."""
