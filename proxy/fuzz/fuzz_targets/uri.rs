//! Request-target parsing, %-decoding and normalisation (`uri::parse_target`) under every
//! combination of `AllowEncodedSlashes` and `MergeSlashes`.
//!
//! Input layout: byte 0 selects the options, the rest is the request target (lossy UTF-8, as
//! hyper only hands over valid targets).
//!
//! Checked on every accepted origin- or absolute-form target:
//! - the decoded path starts with `/` and has no NUL, CR or LF;
//! - no segment is `.` or `..` (nothing can climb);
//! - with MergeSlashes no `//`;
//! - the query is exactly the raw text after the first `?`;
//! - normalisation is a fixed point: re-encoding the decoded path and parsing it again gives
//!   the same path.
//!
//! Rejections carry 400, 404 or 414 only.
#![no_main]

use fcgi_proxy::uri::{self, EncodedSlashes, TargetForm, UriOptions};
use libfuzzer_sys::fuzz_target;

fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let opts = UriOptions {
        max_len: if sel & 0x80 != 0 { 64 } else { 8190 },
        encoded_slashes: match sel % 3 {
            0 => EncodedSlashes::Off,
            1 => EncodedSlashes::On,
            _ => EncodedSlashes::NoDecode,
        },
        merge_slashes: sel & 0x04 != 0,
    };
    let target = String::from_utf8_lossy(rest);
    let u = match uri::parse_target(&target, &opts) {
        Ok(u) => u,
        Err(e) => {
            assert!(matches!(e.status, 400 | 404 | 414), "{e:?}");
            assert_eq!(e.status == 414, target.len() > opts.max_len, "{e:?}");
            return;
        }
    };
    assert!(target.len() <= opts.max_len);
    assert_eq!(u.raw, target);
    if u.form == TargetForm::Asterisk {
        assert_eq!(u.path, b"*");
        return;
    }
    let p = &u.path;
    assert_eq!(p.first(), Some(&b'/'), "{target:?} -> {:?}", u.path_lossy());
    assert!(
        !p.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'),
        "{target:?} -> {:?}",
        u.path_lossy()
    );
    assert!(!has_dot_segment(p), "{target:?} -> {:?}", u.path_lossy());
    if opts.merge_slashes {
        assert!(
            !p.windows(2).any(|w| w == b"//"),
            "{target:?} -> {:?}",
            u.path_lossy()
        );
    }
    let after_q = target.find('?').map(|i| &target[i + 1..]);
    if u.form == TargetForm::Origin {
        assert_eq!(u.query.as_deref(), after_q);
    }
    let again = uri::decode_and_normalize(&uri::encode_path(p), &opts);
    assert_eq!(
        again.as_deref(),
        Ok(&p[..]),
        "{target:?} -> {:?} is not a fixed point",
        u.path_lossy()
    );
});
