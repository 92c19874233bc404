//! Pinned upstream sources, located with cargo_metadata.
