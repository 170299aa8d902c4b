//! Unit tests of the fetch parts.
