//! The side-by-side benchmark (`cargo xtask bench`).
