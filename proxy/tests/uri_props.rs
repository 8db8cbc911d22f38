//! Property tests for request-target decoding and normalisation.

use fcgi_proxy::uri::{
    EncodedSlashes, UriOptions, canon_encode, decode_and_normalize, encode_path, parse_host,
    parse_target, unescape_keep2f,
};
use proptest::prelude::*;

fn opts(slashes: EncodedSlashes, merge: bool) -> UriOptions {
    UriOptions {
        max_len: 1 << 20,
        encoded_slashes: slashes,
        merge_slashes: merge,
    }
}

fn any_slashes() -> impl Strategy<Value = EncodedSlashes> {
    prop_oneof![
        Just(EncodedSlashes::Off),
        Just(EncodedSlashes::On),
        Just(EncodedSlashes::NoDecode)
    ]
}

/// Request-target-ish strings: heavy on the characters that matter.
fn target_chars() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%2F".to_string()),
            Just("%00".to_string()),
            Just("%0a".to_string()),
            Just("%25".to_string()),
            Just("?".to_string()),
            Just("#".to_string()),
            Just("a".to_string()),
            Just("%zz".to_string()),
            "[ -~]{0,3}",
            "\\PC{0,2}",
        ],
        0..24,
    )
    .prop_map(|v| v.concat())
}

/// Decoded path segments that survive a round trip: no NUL/CR/LF, not `.`/`..`, not empty.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..12).prop_filter("round-trippable segment", |s| {
        s.as_slice() != b"."
            && s.as_slice() != b".."
            && !s
                .iter()
                .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b == b'/')
    })
}

fn has_bad_segment(p: &[u8]) -> bool {
    let s = p;
    s.windows(2).any(|w| w == b"//")
        || s.windows(3).any(|w| w == b"/./")
        || s.windows(4).any(|w| w == b"/../")
        || s.ends_with(b"/.")
        || s.ends_with(b"/..")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics(t in target_chars(), slashes in any_slashes(), merge in any::<bool>()) {
        let _ = parse_target(&t, &opts(slashes, merge));
        let _ = parse_target(&format!("/{t}"), &opts(slashes, merge));
        let _ = parse_target(&format!("http://h{t}"), &opts(slashes, merge));
    }

    #[test]
    fn arbitrary_strings_never_panic(t in "\\PC*") {
        let _ = parse_target(&t, &UriOptions::default());
        let _ = parse_host(t.as_bytes());
    }

    #[test]
    fn normalised_paths_have_no_dot_or_empty_segments(t in target_chars(), slashes in any_slashes()) {
        if let Ok(u) = parse_target(&format!("/{t}"), &opts(slashes, true)) {
            prop_assert!(u.path.starts_with(b"/"), "{:?}", u.path);
            prop_assert!(!has_bad_segment(&u.path), "{:?} -> {:?}", t, String::from_utf8_lossy(&u.path));
            prop_assert!(!u.path.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
            // The query is the raw text after the first '?'.
            let raw = format!("/{t}");
            prop_assert_eq!(u.query(), raw.split_once('?').map(|x| x.1));
            prop_assert_eq!(u.raw, raw);
        }
    }

    #[test]
    fn off_mode_never_yields_a_decoded_slash_from_percent(t in target_chars()) {
        // With AllowEncodedSlashes Off every '/' in the result was a '/' in the input.
        if let Ok(u) = parse_target(&format!("/{t}"), &opts(EncodedSlashes::Off, true)) {
            let raw_path = format!("/{t}");
            let raw_path = raw_path.split('?').next().unwrap();
            let input_slashes = raw_path.matches('/').count();
            let output_slashes = u.path.iter().filter(|&&b| b == b'/').count();
            prop_assert!(output_slashes <= input_slashes);
        }
    }

    #[test]
    fn decode_of_encode_is_identity(segs in proptest::collection::vec(segment(), 0..6), trailing in any::<bool>()) {
        let mut path = Vec::new();
        for s in &segs {
            path.push(b'/');
            path.extend_from_slice(s);
        }
        if trailing || path.is_empty() {
            path.push(b'/');
        }
        let enc = encode_path(&path);
        prop_assert!(enc.is_ascii());
        for slashes in [EncodedSlashes::Off, EncodedSlashes::On, EncodedSlashes::NoDecode] {
            let dec = decode_and_normalize(&enc, &opts(slashes, true));
            prop_assert_eq!(dec.as_ref().map(Vec::as_slice), Ok(path.as_slice()), "{}", enc);
        }
        // And through a full request target with a query.
        let u = parse_target(&format!("{enc}?q=%20"), &UriOptions { max_len: 1 << 20, ..UriOptions::default() }).unwrap();
        prop_assert_eq!(u.path, path);
    }

    #[test]
    fn canon_encoding_is_reversible_and_safe(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let enc = canon_encode(&bytes, false).unwrap();
        prop_assert!(enc.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'"' && b != b'<' && b != b'>'));
        // keep2f unescaping gives the bytes back except that a literal "%2F" stays encoded.
        let has_literal_2f = bytes.windows(3).any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'));
        if !has_literal_2f {
            prop_assert_eq!(unescape_keep2f(enc.as_bytes()), bytes);
        }
    }

    #[test]
    fn double_encoding_decodes_once(segs in proptest::collection::vec(segment(), 1..4)) {
        // "%25xx" decodes to a literal "%xx", never further (S7).
        let mut path = Vec::new();
        for s in &segs {
            path.push(b'/');
            path.extend_from_slice(s);
        }
        let once = encode_path(&path);
        let twice = once.replace('%', "%25");
        let u = parse_target(&twice, &UriOptions { max_len: 1 << 20, ..UriOptions::default() }).unwrap();
        prop_assert_eq!(u.path, once.into_bytes());
    }
}

#[test]
fn security_probes() {
    let o = UriOptions::default();
    let status = |t: &str| parse_target(t, &o).err().map(|e| e.status);
    assert_eq!(status("/..%2f..%2fetc/passwd"), Some(404));
    assert_eq!(status("/%2e%2e/%2e%2e/etc/passwd"), Some(400));
    assert_eq!(status("/.%2e/.%2e/etc/passwd.php"), Some(400));
    assert_eq!(
        parse_target("/%%32%65%%32%65/x.php", &o)
            .err()
            .map(|e| e.status),
        Some(400)
    );
    assert_eq!(
        parse_target("/foo%252fbar.php", &o).unwrap().path,
        b"/foo%2fbar.php"
    );
    assert_eq!(status("/foo%2fbar.php"), Some(404));
    assert_eq!(
        parse_target("//double//slash.php", &o).unwrap().path,
        b"/double/slash.php"
    );
    assert_eq!(
        parse_target("/a/b/../../c.php", &o).unwrap().path,
        b"/c.php"
    );
    assert_eq!(status("/index.php%00.txt"), Some(400));
    assert_eq!(status("/img.jpg%20%00.php"), Some(400));
    assert_eq!(status("/a.php/%0a"), Some(400));
    assert_eq!(status("/index.php%0a/x"), Some(400));
    assert_eq!(status("/index.php/x%0d"), Some(400));
    let u = parse_target("/a.php?x=%0d%0aSet-Cookie:%20a=b", &o).unwrap();
    assert_eq!(u.query(), Some("x=%0d%0aSet-Cookie:%20a=b"));
    // CVE-2021-40438 shape: just a path and a query, never a backend.
    let long = format!("/?unix:{}|fcgi://127.0.0.1:2/", "A".repeat(5000));
    let u = parse_target(
        &long,
        &UriOptions {
            max_len: 1 << 16,
            ..o.clone()
        },
    )
    .unwrap();
    assert_eq!(u.path, b"/");
}
