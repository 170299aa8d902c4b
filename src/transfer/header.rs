//! Transfer header codec (placeholder).
