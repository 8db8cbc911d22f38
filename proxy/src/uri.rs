//! Request-target parsing, decoding and normalisation.
