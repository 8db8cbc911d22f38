//! CGI params.
