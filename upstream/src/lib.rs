// Intentionally empty: this crate exists only so cargo can resolve and fetch the pinned sources.
