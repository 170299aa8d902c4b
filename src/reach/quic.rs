//! (placeholder: filled by the reach work)
