//! Watch: rebuild the affected images on save (debounced file events, incremental re-hash).
