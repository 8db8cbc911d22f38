//! Scriptable mock FastCGI backend.
