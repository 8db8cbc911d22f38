//! Support shared by the tests and the conformance suite. It depends on no crate of this
//! workspace, so every test crate and the suite can use it.
//!
//! [`http1`]: HTTP/1.x responses parsed from the raw bytes a connection delivered (status,
//! headers, and a body framed by Content-Length, chunked coding or the end of the connection),
//! for the clients that send what no HTTP library would and must read back exactly what came.
//! [`h2`]: HTTP/2 frames and HPACK literal header blocks written byte by byte.

pub mod h2;
pub mod http1;

/// The names of the files directly in `dir`, sorted. Panics naming `dir` if it cannot be read:
/// for the tests that compare a directory of snapshots or scenarios with what produces them.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
