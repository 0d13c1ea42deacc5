//! The Registry HTTP API tier of the cache: look up, pull-free retag and push by key tag.
